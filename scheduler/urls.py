app_name = "scheduler"

urlpatterns: list = []
