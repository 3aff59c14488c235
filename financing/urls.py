from django.urls import path

from financing import views

app_name = "financing"

urlpatterns = [
    path("lender/", views.lender_dashboard, name="lender_dashboard"),
    path("lender/loans/", views.loan_book_page, name="loan_book"),
    path("lender/loans/tape.csv", views.loan_tape_csv, name="loan_tape"),
    path("lender/loans/<uuid:public_id>/", views.lender_loan, name="lender_loan"),
    path("lender/collateral/<int:pk>/", views.collateral_page, name="collateral"),
    path("owner/financing/", views.owner_financing, name="owner_financing"),
    path("owner/loans/<uuid:public_id>/", views.owner_loan, name="owner_loan"),
]
