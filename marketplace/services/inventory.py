"""Inventory writes: servers and their GPUs, one by one or from a CSV file.

Every write validates everything first and then writes in one transaction,
so a bad row or a duplicate serial leaves nothing half-written. Serial
uniqueness (case-insensitive, platform-wide) is checked here for a clear
message and enforced by a unique index for concurrent writers.
"""

import csv
import hashlib
import io
from collections import Counter
from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.db.models.functions import Upper

from accounts.models import OwnerCompany
from marketplace.lock_objects import server_lock
from marketplace.models import Gpu, GpuModel, Listing, Region, Server, hostname_validator, serial_validator
from marketplace.services.listings import listing_refresh_inventory, validate_share

MAX_GPUS_PER_SERVER = 16
CSV_REQUIRED_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
CSV_OPTIONAL_COLUMNS = ("serials", "region", "data_centre", "server_serial")


@dataclass(frozen=True)
class ServerSpec:
    """What an owner declares about one server before it is written."""

    hostname: str
    region: Region
    cpu_milli: int
    memory_mib: int
    gpu_model: GpuModel
    gpu_count: int
    gpu_serials: tuple[str, ...] = ()
    data_centre: str = ""
    serial_number: str = ""


@dataclass(frozen=True)
class RowError:
    line: int
    field: str
    message: str


@dataclass
class InventoryImportError(Exception):
    """A CSV import refused as a whole; ``errors`` lists every bad row."""

    errors: list[RowError] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{len(self.errors)} error(s) in the CSV file; nothing was imported."


def platform_serial(*, owner: OwnerCompany, hostname: str, slot: int) -> str:
    """A stable serial for a GPU whose owner gave none (marked as platform-assigned)."""
    digest = hashlib.sha256(f"{owner.pk}|{hostname.lower()}|{slot}".encode()).hexdigest()
    return f"IFX{digest[:13].upper()}"


def _spec_serials(owner: OwnerCompany, spec: ServerSpec) -> list[tuple[str, bool]]:
    if spec.gpu_serials:
        return [(s, False) for s in spec.gpu_serials]
    return [(platform_serial(owner=owner, hostname=spec.hostname, slot=i), True) for i in range(spec.gpu_count)]


def _existing_serials(serials: list[str]) -> set[str]:
    upper = {s.upper() for s in serials}
    found: set[str] = set()
    chunk = list(upper)
    for i in range(0, len(chunk), 500):
        found.update(
            Gpu.objects.annotate(u=Upper("serial")).filter(u__in=chunk[i : i + 500]).values_list("u", flat=True)
        )
    return found


def _validate_specs(owner: OwnerCompany, specs: list[ServerSpec]) -> list[dict[str, list[str]]]:
    """Field errors per spec (same order); empty dicts mean the spec is valid."""
    errors: list[dict[str, list[str]]] = [{} for _ in specs]

    def add(i: int, name: str, message: str) -> None:
        errors[i].setdefault(name, []).append(message)

    for i, spec in enumerate(specs):
        for name, value, validator in (
            ("hostname", spec.hostname, hostname_validator),
            ("serial_number", spec.serial_number, serial_validator),
        ):
            if value:
                try:
                    validator(value)
                except ValidationError as exc:
                    add(i, name, exc.messages[0])
        if not spec.hostname:
            add(i, "hostname", "Enter the server's hostname.")
        if spec.cpu_milli < 1000:
            add(i, "cpu_milli", "A server has at least one CPU core (1000 millicores).")
        if spec.memory_mib < 1024:
            add(i, "memory_mib", "A server has at least 1 GiB (1024 MiB) of RAM.")
        if not 1 <= spec.gpu_count <= MAX_GPUS_PER_SERVER:
            add(i, "gpu_count", f"A server has between 1 and {MAX_GPUS_PER_SERVER} GPUs.")
        if spec.gpu_serials:
            if len(spec.gpu_serials) != spec.gpu_count:
                add(
                    i,
                    "gpu_serials",
                    f"{len(spec.gpu_serials)} serial(s) given for {spec.gpu_count} GPU(s); give one per GPU or none.",
                )
            for serial in spec.gpu_serials:
                try:
                    serial_validator(serial)
                except ValidationError as exc:
                    add(i, "gpu_serials", f"{serial!r}: {exc.messages[0]}")

    # Hostnames: unique per owner, within the batch and against the database.
    host_counts = Counter(s.hostname.lower() for s in specs)
    taken_hosts = {
        h.lower()
        for h in Server.objects.filter(owner=owner, hostname__in=[s.hostname for s in specs]).values_list(
            "hostname", flat=True
        )
    }
    for i, spec in enumerate(specs):
        key = spec.hostname.lower()
        if key in taken_hosts:
            add(i, "hostname", f"You already have a server named {spec.hostname}.")
        elif host_counts[key] > 1:
            add(i, "hostname", f"The hostname {spec.hostname} appears more than once.")

    # GPU serials: unique platform-wide, case-insensitive. A platform-assigned
    # serial derives from the hostname, so its clashes are hostname errors
    # already reported above.
    all_serials = [
        (i, s)
        for i, spec in enumerate(specs)
        for s, assigned in _spec_serials(owner, spec)
        if not (assigned and "hostname" in errors[i])
    ]
    serial_counts = Counter(s.upper() for _, s in all_serials)
    taken = _existing_serials([s for _, s in all_serials])
    for i, serial in all_serials:
        if serial.upper() in taken:
            add(i, "gpu_serials", f"GPU serial {serial} is already registered on the platform.")
        elif serial_counts[serial.upper()] > 1:
            add(i, "gpu_serials", f"GPU serial {serial} appears more than once.")

    server_serials = [s.serial_number for s in specs if s.serial_number]
    if server_serials:
        taken_server = {
            v.upper()
            for v in Server.objects.annotate(u=Upper("serial_number"))
            .filter(u__in=[s.upper() for s in server_serials])
            .values_list("serial_number", flat=True)
        }
        server_counts = Counter(s.upper() for s in server_serials)
        for i, spec in enumerate(specs):
            if spec.serial_number and spec.serial_number.upper() in taken_server:
                add(i, "serial_number", f"Server serial {spec.serial_number} is already registered.")
            elif spec.serial_number and server_counts[spec.serial_number.upper()] > 1:
                add(i, "serial_number", f"Server serial {spec.serial_number} appears more than once.")
    return errors


def _write_specs(owner: OwnerCompany, specs: list[ServerSpec]) -> list[Server]:
    try:
        with transaction.atomic():
            servers = [
                Server(
                    owner=owner,
                    hostname=spec.hostname,
                    serial_number=spec.serial_number,
                    region=spec.region,
                    data_centre=spec.data_centre,
                    cpu_milli=spec.cpu_milli,
                    memory_mib=spec.memory_mib,
                )
                for spec in specs
            ]
            if len(servers) == 1:
                servers[0].save()
            else:
                # PostgreSQL and SQLite both return primary keys from bulk_create.
                servers = Server.objects.bulk_create(servers, batch_size=500)
            gpus = [
                Gpu(
                    server=server,
                    slot=slot,
                    serial=serial,
                    serial_assigned_by_platform=assigned,
                    model=spec.gpu_model,
                )
                for server, spec in zip(servers, specs, strict=True)
                for slot, (serial, assigned) in enumerate(_spec_serials(owner, spec))
            ]
            Gpu.objects.bulk_create(gpus, batch_size=1000)
    except IntegrityError as exc:
        # A concurrent writer took a hostname or serial between our check and our insert.
        raise ValidationError(
            {"gpu_serials": "A serial number or hostname was registered by someone else meanwhile; try again."}
        ) from exc
    return servers


def server_create(
    *,
    owner: OwnerCompany,
    hostname: str,
    region: Region,
    cpu_milli: int,
    memory_mib: int,
    gpu_model: GpuModel,
    gpu_count: int,
    gpu_serials: list[str] | tuple[str, ...] = (),
    data_centre: str = "",
    serial_number: str = "",
) -> Server:
    """Register a server and its GPUs; all or nothing.

    GPUs without a serial from the owner get a stable platform-assigned one,
    flagged so that collateral review can ask for the real serials.
    """
    spec = ServerSpec(
        hostname=hostname.strip(),
        region=region,
        cpu_milli=cpu_milli,
        memory_mib=memory_mib,
        gpu_model=gpu_model,
        gpu_count=gpu_count,
        gpu_serials=tuple(s.strip() for s in gpu_serials if s.strip()),
        data_centre=data_centre.strip(),
        serial_number=serial_number.strip(),
    )
    (errors,) = _validate_specs(owner, [spec])
    if errors:
        raise ValidationError(errors)
    (server,) = _write_specs(owner, [spec])
    return server


def server_update(
    *,
    server: Server,
    hostname: str,
    region: Region,
    cpu_milli: int,
    memory_mib: int,
    data_centre: str = "",
    serial_number: str = "",
) -> Server:
    hostname = hostname.strip()
    serial_number = serial_number.strip()
    if Server.objects.filter(owner=server.owner, hostname__iexact=hostname).exclude(pk=server.pk).exists():
        raise ValidationError({"hostname": f"You already have a server named {hostname}."})
    if serial_number and Server.objects.filter(serial_number__iexact=serial_number).exclude(pk=server.pk).exists():
        raise ValidationError({"serial_number": f"Server serial {serial_number} is already registered."})
    server.hostname = hostname
    server.region = region
    server.cpu_milli = cpu_milli
    server.memory_mib = memory_mib
    server.data_centre = data_centre.strip()
    server.serial_number = serial_number
    server.full_clean(exclude=["owner"])
    _check_listing_share_fits(server)
    with transaction.atomic():
        server.save()
        listing_refresh_inventory(server=server)
    return server


def _check_listing_share_fits(server: Server) -> None:
    """A server's CPU or RAM cannot go below what its listing promises per GPU × its GPUs."""
    listing = Listing.objects.filter(server=server).first()
    if listing is None:
        return
    try:
        validate_share(server, listing.cpu_milli_per_gpu, listing.memory_mib_per_gpu)
    except ValidationError as exc:
        fields = {"cpu_milli_per_gpu": "cpu_milli", "memory_mib_per_gpu": "memory_mib"}
        raise ValidationError(
            {
                fields[name]: [f"Its listing promises more per GPU than that: {m}" for m in messages]
                for name, messages in exc.message_dict.items()
            }
        ) from exc


def server_delete(*, server: Server) -> None:
    if server.bookings.exists():
        raise ValidationError({"server": "This server has bookings and cannot be deleted; pause its listing instead."})
    server.delete()


def gpu_add(*, server: Server, serial: str, model: GpuModel | None = None) -> Gpu:
    """Add a GPU to a server in the next free slot."""
    serial = serial.strip()
    try:
        serial_validator(serial)
    except ValidationError as exc:
        raise ValidationError({"serial": exc.messages}) from exc
    if _existing_serials([serial]):
        raise ValidationError({"serial": f"GPU serial {serial} is already registered on the platform."})
    try:
        with transaction.atomic():
            locked = server_lock(server.pk)
            current = locked.gpus.count()
            if current >= MAX_GPUS_PER_SERVER:
                raise ValidationError({"serial": f"A server has at most {MAX_GPUS_PER_SERVER} GPUs."})
            if model is None:
                first = locked.gpus.select_related("model").first()
                if first is None:
                    raise ValidationError({"model": "Choose the GPU model."})
                model = first.model
            next_slot = (locked.gpus.aggregate(m=Max("slot"))["m"] if current else -1) + 1
            gpu = Gpu.objects.create(server=locked, slot=next_slot, serial=serial, model=model)
            listing_refresh_inventory(server=locked)
            return gpu
    except IntegrityError as exc:
        raise ValidationError({"serial": f"GPU serial {serial} is already registered on the platform."}) from exc


def gpu_status_set(*, gpu: Gpu, status: str) -> Gpu:
    if status not in Gpu.Status.values:
        raise ValidationError({"status": f"Choose one of: {', '.join(Gpu.Status.values)}."})
    with transaction.atomic():
        gpu.status = status
        gpu.save(update_fields=["status", "updated_at"])
        listing_refresh_inventory(server=gpu.server)
    return gpu


def gpu_remove(*, gpu: Gpu) -> None:
    if gpu.server.gpus.count() <= 1:
        raise ValidationError({"gpu": "A server keeps at least one GPU; delete the server instead."})
    if gpu.allocations.exists():
        raise ValidationError({"gpu": "This GPU has bookings; set it to retired instead of removing it."})
    with transaction.atomic():
        gpu.delete()
        listing_refresh_inventory(server=gpu.server)


def _parse_int(raw: str) -> int | None:
    try:
        return int(raw.strip())
    except (ValueError, AttributeError):
        return None


def servers_import_csv(*, owner: OwnerCompany, content: bytes | str, default_region: Region | None) -> list[Server]:
    """Import servers from a CSV shaped like the Alibaba node list.

    Columns ``sn, cpu_milli, memory_mib, gpu, model`` are required (``model``
    is a catalogue name or trace code such as ``V100M16``); ``serials``
    (separated by ``;``), ``region`` (a region code), ``data_centre`` and
    ``server_serial`` are optional. Any bad row refuses the whole file with
    every error listed (``InventoryImportError``); otherwise all rows are
    written in one transaction.
    """
    text = content.decode("utf-8-sig") if isinstance(content, bytes) else content
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in CSV_REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise InventoryImportError([RowError(1, "header", f"Missing column(s): {', '.join(missing)}.")])
    models_by_key: dict[str, GpuModel] = {}
    for m in GpuModel.objects.all():
        models_by_key[m.name.lower()] = m
        if m.trace_code:
            models_by_key[m.trace_code.lower()] = m
    regions = {r.code: r for r in Region.objects.all()}
    max_rows = settings.INVENTORY_IMPORT_MAX_ROWS

    parse_errors: list[RowError] = []
    specs: list[ServerSpec] = []
    lines: list[int] = []
    for row in reader:
        line = reader.line_num
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
        if not any(row.values()):
            continue
        if len(specs) + len({e.line for e in parse_errors}) >= max_rows:
            raise InventoryImportError([RowError(line, "file", f"At most {max_rows} rows can be imported at once.")])
        row_errors: list[RowError] = []
        cpu = _parse_int(row["cpu_milli"])
        mem = _parse_int(row["memory_mib"])
        count = _parse_int(row["gpu"])
        for name, value in (("cpu_milli", cpu), ("memory_mib", mem), ("gpu", count)):
            if value is None:
                row_errors.append(RowError(line, name, f"{row[name]!r} is not a whole number."))
        model = models_by_key.get(row["model"].lower())
        if model is None:
            row_errors.append(RowError(line, "model", f"Unknown GPU model {row['model']!r}."))
        region_code = row.get("region", "")
        region = regions.get(region_code) if region_code else default_region
        if region is None:
            message = f"Unknown region {region_code!r}." if region_code else "No region column and no default region."
            row_errors.append(RowError(line, "region", message))
        if row_errors:
            parse_errors.extend(row_errors)
            continue
        serials = tuple(s.strip() for s in row.get("serials", "").split(";") if s.strip())
        specs.append(
            ServerSpec(
                hostname=row["sn"],
                region=region,
                cpu_milli=cpu,
                memory_mib=mem,
                gpu_model=model,
                gpu_count=count,
                gpu_serials=serials,
                data_centre=row.get("data_centre", ""),
                serial_number=row.get("server_serial", ""),
            )
        )
        lines.append(line)

    field_names = {"gpu_count": "gpu", "hostname": "sn", "gpu_serials": "serials", "serial_number": "server_serial"}
    spec_errors = _validate_specs(owner, specs) if specs else []
    all_errors = list(parse_errors)
    for line, errors in zip(lines, spec_errors, strict=True):
        for name, messages in errors.items():
            all_errors.extend(RowError(line, field_names.get(name, name), m) for m in messages)
    if all_errors:
        raise InventoryImportError(sorted(all_errors, key=lambda e: (e.line, e.field)))
    if not specs:
        raise InventoryImportError([RowError(2, "file", "The file has no data rows.")])
    return _write_specs(owner, specs)
