"""Servers and GPUs: creation, duplicate serials, CSV import — pages, API and services."""

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from marketplace.models import Gpu, GpuModel, Region, Server
from marketplace.services import inventory
from tests.api_errors import error_list, field_errors
from tests.factories import make_server

pytestmark = pytest.mark.django_db


def counts():
    return Server.objects.count(), Gpu.objects.count()


def test_catalogue_has_current_and_trace_models():
    names = set(GpuModel.objects.values_list("name", flat=True))
    assert {"H100 80GB", "H200", "B200", "A100 80GB", "L40S", "RTX 4090"} <= names
    codes = set(GpuModel.objects.exclude(trace_code="").values_list("trace_code", flat=True))
    assert codes == {"T4", "P100", "V100M16", "V100M32", "A10", "G2", "G3"}
    g2 = GpuModel.objects.get(trace_code="G2")
    assert g2.undisclosed and g2.vram_gb is None and g2.vram_label == "undisclosed"
    assert GpuModel.objects.get(name="H100 80GB").vram_gb == 80


def test_server_created_from_the_page_with_serials(owner, client_as):
    response = client_as(owner).post(
        reverse("marketplace:server_create"),
        {
            "hostname": "gpu-box-01",
            "region": Region.objects.get(code="eu-central").pk,
            "data_centre": "FR5",
            "cpu_milli": 96000,
            "memory_mib": 524288,
            "gpu_model": GpuModel.objects.get(name="H100 80GB").pk,
            "gpu_count": 2,
            "gpu_serials": "1654922001234\n1654922001235",
        },
    )
    server = Server.objects.get(hostname="gpu-box-01")
    assert response.status_code == 302 and response.url == reverse("marketplace:server_detail", args=[server.pk])
    assert list(server.gpus.values_list("slot", "serial", "serial_assigned_by_platform")) == [
        (0, "1654922001234", False),
        (1, "1654922001235", False),
    ]
    assert server.owner == owner.owner_membership.company


def test_gpus_without_serials_get_stable_platform_serials(owner):
    server = make_server(owner, hostname="plain-node", gpu_count=3)
    serials = list(server.gpus.values_list("serial", flat=True))
    company = owner.owner_membership.company
    assert serials == [inventory.platform_serial(owner=company, hostname="plain-node", slot=i) for i in range(3)]
    assert len(set(serials)) == 3
    assert all(server.gpus.values_list("serial_assigned_by_platform", flat=True))


def test_duplicate_gpu_serial_on_the_page_is_a_form_error_and_nothing_is_saved(owner, other_owner, client_as):
    make_server(other_owner, serials=["SN-AAA-1", "SN-AAA-2"])
    before = counts()
    response = client_as(owner).post(
        reverse("marketplace:server_create"),
        {
            "hostname": "dup-node",
            "region": Region.objects.get(code="us-east").pk,
            "cpu_milli": 64000,
            "memory_mib": 262144,
            "gpu_model": GpuModel.objects.get(name="V100 16GB").pk,
            "gpu_count": 2,
            "gpu_serials": "SN-NEW-9, sn-aaa-2",  # case differs: still the same serial
        },
    )
    assert response.status_code == 400
    assert "GPU serial sn-aaa-2 is already registered on the platform." in response.content.decode()
    assert counts() == before
    assert not Server.objects.filter(hostname="dup-node").exists()


def test_duplicate_gpu_serial_through_the_api_is_a_400_with_field_message(owner, other_owner, api_as):
    make_server(other_owner, serials=["SN-XYZ-1"], gpu_count=1)
    before = counts()
    response = api_as(owner).post(
        reverse("api:server-list"),
        {
            "hostname": "api-node",
            "region": "us-west",
            "cpu_milli": 64000,
            "memory_mib": 262144,
            "gpu_model": "T4",
            "gpu_count": 2,
            "gpu_serials": ["SN-XYZ-1", "SN-XYZ-2"],
        },
        format="json",
    )
    assert response.status_code == 400
    assert field_errors(response) == {"gpu_serials": ["GPU serial SN-XYZ-1 is already registered on the platform."]}
    assert counts() == before


def test_duplicate_serial_within_one_request_is_refused(owner):
    with pytest.raises(ValidationError) as exc:
        make_server(owner, serials=["SAME-1", "same-1"])
    assert "appears more than once" in str(exc.value)
    assert counts() == (0, 0)


def test_server_created_through_the_api(owner, api_as):
    response = api_as(owner).post(
        reverse("api:server-list"),
        {
            "hostname": "api-ok",
            "region": "ap-east",
            "cpu_milli": 32000,
            "memory_mib": 131072,
            "gpu_model": "A10",
            "gpu_count": 1,
        },
        format="json",
    )
    assert response.status_code == 201
    body = response.json()
    assert body["hostname"] == "api-ok" and body["region"] == "ap-east"
    assert [g["model"] for g in body["gpus"]] == ["A10"]


def test_bad_api_input_lists_every_field(owner, api_as):
    response = api_as(owner).post(
        reverse("api:server-list"),
        {"hostname": "x", "region": "mars", "cpu_milli": 10, "memory_mib": 1, "gpu_model": "Voodoo", "gpu_count": 99},
        format="json",
    )
    assert response.status_code == 400
    assert set(field_errors(response)) == {"region", "cpu_milli", "memory_mib", "gpu_model", "gpu_count"}
    assert counts() == (0, 0)


def test_gpu_add_and_status_through_the_api(owner, other_owner, api_as):
    server = make_server(owner, gpu_count=1)
    make_server(other_owner, serials=["TAKEN-1"], gpu_count=1)
    client = api_as(owner)
    refused = client.post(reverse("api:gpu-list"), {"server": server.pk, "serial": "taken-1"}, format="json")
    assert refused.status_code == 400 and "already registered" in field_errors(refused)["serial"][0]
    added = client.post(reverse("api:gpu-list"), {"server": server.pk, "serial": "NEW-GPU-7"}, format="json")
    assert added.status_code == 201 and added.json()["slot"] == 1 and added.json()["model"] == "V100 16GB"
    gpu_id = added.json()["id"]
    status = client.post(reverse("api:gpu-set-status", args=[gpu_id]), {"status": "maintenance"}, format="json")
    assert status.status_code == 200 and Gpu.objects.get(pk=gpu_id).status == "maintenance"
    bad = client.post(reverse("api:gpu-set-status", args=[gpu_id]), {"status": "melted"}, format="json")
    assert bad.status_code == 400 and Gpu.objects.get(pk=gpu_id).status == "maintenance"


def test_owner_page_flow_edit_add_gpu_remove(owner, client_as):
    client = client_as(owner)
    server = make_server(owner, hostname="edit-me", gpu_count=1)
    edit = client.post(
        reverse("marketplace:server_edit", args=[server.pk]),
        {
            "hostname": "edited",
            "region": Region.objects.get(code="eu-north").pk,
            "cpu_milli": 48000,
            "memory_mib": 196608,
            "data_centre": "Pionen",
            "serial_number": "SRV-77",
        },
    )
    assert edit.status_code == 302
    server.refresh_from_db()
    assert (server.hostname, server.region.code, server.serial_number) == ("edited", "eu-north", "SRV-77")
    client.post(reverse("marketplace:gpu_add", args=[server.pk]), {"serial": "CARD-2"})
    assert list(server.gpus.values_list("serial", flat=True))[-1] == "CARD-2"
    gpu = server.gpus.get(serial="CARD-2")
    client.post(reverse("marketplace:gpu_remove", args=[server.pk, gpu.pk]))
    assert not Gpu.objects.filter(pk=gpu.pk).exists()
    # the last GPU stays: a server without GPUs is no server of ours
    last = server.gpus.get()
    client.post(reverse("marketplace:gpu_remove", args=[server.pk, last.pk]))
    assert Gpu.objects.filter(pk=last.pk).exists()


NODE_HEADER = "sn,cpu_milli,memory_mib,gpu,model,serials,region\n"


def test_csv_import_of_trace_rows(owner, client_as):
    csv_text = NODE_HEADER + (
        "openb-node-0000,64000,262144,2,P100,P100-A;P100-B,us-east\n"
        "openb-node-0227,96000,786432,8,G2,,eu-central\n"
        "openb-node-1000,32000,131072,1,T4,,\n"
    )
    response = client_as(owner).post(
        reverse("marketplace:server_import"),
        {
            "file": SimpleUploadedFile("nodes.csv", csv_text.encode()),
            "default_region": Region.objects.get(code="ap-east").pk,
        },
    )
    assert response.status_code == 302
    assert counts() == (3, 11)
    assert Server.objects.get(hostname="openb-node-1000").region.code == "ap-east"
    assert list(Server.objects.get(hostname="openb-node-0000").gpus.values_list("serial", flat=True)) == [
        "P100-A",
        "P100-B",
    ]
    assert Server.objects.get(hostname="openb-node-0227").gpus.first().model.trace_code == "G2"


def test_csv_import_with_one_bad_row_lists_the_errors_and_imports_nothing(owner, other_owner, client_as):
    make_server(other_owner, serials=["USED-1"], gpu_count=1)
    before = counts()
    csv_text = NODE_HEADER + (
        "good-1,64000,262144,2,V100M16,,us-east\n"
        "bad-1,lots,262144,2,V100M99,,us-east\n"
        "good-2,64000,262144,1,T4,used-1,us-east\n"
        "good-1,64000,262144,1,T4,,atlantis\n"
    )
    response = client_as(owner).post(
        reverse("marketplace:server_import"), {"file": SimpleUploadedFile("nodes.csv", csv_text.encode())}
    )
    assert response.status_code == 400
    errors = [(e.line, e.field, e.message) for e in response.context["row_errors"]]
    assert errors == [
        (3, "cpu_milli", "'lots' is not a whole number."),
        (3, "model", "Unknown GPU model 'V100M99'."),
        (4, "serials", "GPU serial used-1 is already registered on the platform."),
        (5, "region", "Unknown region 'atlantis'."),
    ]
    assert "nothing was imported" in response.content.decode()
    assert counts() == before


def test_csv_import_duplicate_hostnames_in_file(owner, api_as):
    csv_text = NODE_HEADER + "twin,64000,262144,1,T4,,us-east\ntwin,64000,262144,1,T4,,us-east\n"
    response = api_as(owner).post(
        reverse("api:server-import"), {"file": SimpleUploadedFile("n.csv", csv_text.encode())}, format="multipart"
    )
    assert response.status_code == 400
    assert error_list(response) == [
        ("rows.2.sn", "The hostname twin appears more than once."),
        ("rows.3.sn", "The hostname twin appears more than once."),
    ]
    assert counts() == (0, 0)


def test_csv_import_through_the_api_keeps_every_message_of_a_cell(owner, other_owner, api_as):
    make_server(other_owner, serials=["USED-1", "USED-2"], gpu_count=2)
    csv_text = NODE_HEADER + "twin,64000,262144,2,T4,used-1;used-2,us-east\n"
    response = api_as(owner).post(
        reverse("api:server-import"), {"file": SimpleUploadedFile("n.csv", csv_text.encode())}, format="multipart"
    )
    assert response.status_code == 400
    assert error_list(response) == [
        ("rows.2.serials", "GPU serial used-1 is already registered on the platform."),
        ("rows.2.serials", "GPU serial used-2 is already registered on the platform."),
    ]


def test_csv_import_through_the_api(owner, api_as):
    csv_text = "sn,cpu_milli,memory_mib,gpu,model\nn1,64000,262144,4,V100M32\nn2,64000,262144,2,A10\n"
    response = api_as(owner).post(
        reverse("api:server-import"),
        {"file": SimpleUploadedFile("n.csv", csv_text.encode()), "default_region": "us-west"},
        format="multipart",
    )
    assert response.status_code == 201 and response.json() == {"created": 2}
    assert counts() == (2, 6)


def test_csv_import_missing_columns(owner):
    with pytest.raises(inventory.InventoryImportError) as exc:
        inventory.servers_import_csv(owner=owner.owner_membership.company, content="sn,gpu\nx,1\n", default_region=None)
    assert exc.value.errors[0].message == "Missing column(s): cpu_milli, memory_mib, model."
    assert counts() == (0, 0)


def test_server_list_is_paginated_and_filterable(owner, client_as):
    csv_text = "sn,cpu_milli,memory_mib,gpu,model\n" + "".join(f"rack-{i:03d},64000,262144,1,T4\n" for i in range(60))
    inventory.servers_import_csv(
        owner=owner.owner_membership.company, content=csv_text, default_region=Region.objects.get(code="us-east")
    )
    client = client_as(owner)
    first = client.get(reverse("marketplace:server_list"))
    assert len(first.context["servers"]) == 50 and first.context["page"].paginator.num_pages == 2
    second = client.get(reverse("marketplace:server_list"), {"page": 2})
    assert [s.hostname for s in second.context["servers"]] == [f"rack-{i:03d}" for i in range(50, 60)]
    filtered = client.get(reverse("marketplace:server_list"), {"q": "RACK-01"})
    assert [s.hostname for s in filtered.context["servers"]] == [f"rack-{i:03d}" for i in range(10, 20)]
