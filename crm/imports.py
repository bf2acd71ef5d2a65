"""CSV imports of contacts and activities: decode, map columns, validate per row, store.

The uploaded text is kept in the user's session between the preview and the import
(sessions live in the database, so any web process can finish the import); it is capped
at :data:`MAX_BYTES`. Contacts go through :func:`crm.services.contacts_upsert` (keyed by
email, so re-importing a file changes nothing), activities through
:func:`crm.ingest.activities_record`. Every rejected row is reported with its line number;
valid rows are stored.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from typing import Any

from . import ingest, services
from .exports import unneutralise
from .models import Contact, Source

MAX_BYTES = 5 * 1024 * 1024
CHUNK = 1000
IGNORE = ""
ATTRIBUTE_PREFIX = "attr:"

CONTACT_TARGETS = [
    ("email", "Email"),
    ("first_name", "First name"),
    ("last_name", "Last name"),
    ("job_title", "Job title"),
    ("phone", "Phone"),
    ("company_name", "Company name"),
    ("country", "Country (ISO code)"),
    ("timezone", "Time zone"),
    ("source", "Lead source"),
    ("stage", "Lifecycle stage"),
    ("lead_status", "Lead status"),
    ("email_status", "Email status"),
    ("consent_basis", "Consent basis"),
    ("consent_source", "Consent source"),
]
ACTIVITY_TARGETS = [
    ("email", "Contact email"),
    ("contact", "Contact id"),
    ("kind", "Kind"),
    ("occurred_at", "Occurred at (ISO 8601 with zone)"),
    ("campaign", "Campaign id"),
    ("external_id", "External id"),
    ("url", "URL"),
    ("first_name", "First name"),
    ("last_name", "Last name"),
]


def _key(header: str) -> str:
    return re.sub(r"[^a-z0-9]", "", header.lower())


# HubSpot / Salesforce / our own export headers, compared without case, spaces or "_".
CONTACT_ALIASES = {
    "email": "email",
    "emailaddress": "email",
    "email1": "email",
    "workemail": "email",
    "firstname": "first_name",
    "givenname": "first_name",
    "lastname": "last_name",
    "surname": "last_name",
    "familyname": "last_name",
    "jobtitle": "job_title",
    "title": "job_title",
    "phone": "phone",
    "phonenumber": "phone",
    "mobilephone": "phone",
    "company": "company_name",
    "companyname": "company_name",
    "accountname": "company_name",
    "account": "company_name",
    "companyaccount": "company_name",  # Salesforce lead export: "Company / Account"
    "organization": "company_name",
    "country": "country",
    "countryregion": "country",
    "mailingcountry": "country",
    "countrycode": "country",
    "timezone": "timezone",
    "leadsource": "source",
    "source": "source",
    "originalsource": "source",
    "lifecyclestage": "stage",
    "stage": "stage",
    "leadstatus": "lead_status",
    "status": "lead_status",
    "emailstatus": "email_status",
    "consentbasis": "consent_basis",
    "consentsource": "consent_source",
}
ACTIVITY_ALIASES = {
    "email": "email",
    "emailaddress": "email",
    "contact": "contact",
    "contactid": "contact",
    "kind": "kind",
    "type": "kind",
    "activitytype": "kind",
    "occurredat": "occurred_at",
    "timestamp": "occurred_at",
    "date": "occurred_at",
    "campaign": "campaign",
    "campaignid": "campaign",
    "externalid": "external_id",
    "url": "url",
    "firstname": "first_name",
    "lastname": "last_name",
}
# Columns of our own export that are not profile data and are ignored on re-import.
NOT_IMPORTED = {
    "id", "score", "owner", "createdat", "updatedat", "contactowner", "recordid", "leadowner",
}  # fmt: skip


class ImportError_(Exception):
    """The file cannot be read at all (shown to the user as is)."""


@dataclass
class Decoded:
    text: str
    encoding: str
    notice: str = ""


def decode(data: bytes) -> Decoded:
    """UTF-8 (with or without BOM) first; else Windows-1252 with a notice; else refuse."""
    if len(data) > MAX_BYTES:
        raise ImportError_(f"The file is larger than {MAX_BYTES // (1024 * 1024)} MB; split it.")
    if b"\x00" in data[:4096]:
        raise ImportError_(
            "This does not look like a CSV text file (it may be UTF-16 or a spreadsheet). "
            "Save it as 'CSV UTF-8' and upload again."
        )
    try:
        return Decoded(data.decode("utf-8-sig"), "utf-8")
    except UnicodeDecodeError:
        pass
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError as exc:
        raise ImportError_(
            "The file is neither UTF-8 nor Windows-1252 text. Save it as 'CSV UTF-8' and retry."
        ) from exc
    return Decoded(
        text,
        "cp1252",
        "The file was not UTF-8; it was read as Windows-1252 (Western European). "
        "Check accented names in the preview.",
    )


class _Dialect(csv.excel):
    """Excel's quoting (a doubled quote inside a quoted cell is one quote) with the
    delimiter the file uses."""


def _dialect(text: str):
    """Only the delimiter is sniffed (from the first 8 KB): the sniffer also guesses the
    quoting from that sample alone, and a sample without a doubled quote made it read a
    later ``"He said ""hi"", ok"`` as two cells."""
    try:
        delimiter = csv.Sniffer().sniff(text[:8192], delimiters=",;\t").delimiter
    except csv.Error:
        return csv.excel
    return type("Sniffed", (_Dialect,), {"delimiter": delimiter})


def read_rows(text: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Return the header and (line number, cells) of every non-empty data row."""
    reader = csv.reader(io.StringIO(text), _dialect(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration as exc:
        raise ImportError_("The file is empty.") from exc
    except csv.Error as exc:
        raise ImportError_(f"The header line cannot be read: {exc}") from exc
    rows = []
    line = reader.line_num + 1
    try:
        for cells in reader:
            if any(c.strip() for c in cells):
                rows.append((line, cells))
            line = reader.line_num + 1
    except csv.Error as exc:
        raise ImportError_(f"Line {line}: {exc}") from exc
    return header, rows


def auto_mapping(header: list[str], kind: str) -> list[str]:
    """Map each column to a target field; unknown contact columns become custom attributes."""
    aliases = CONTACT_ALIASES if kind == "contacts" else ACTIVITY_ALIASES
    mapping, used = [], set()
    for name in header:
        target = aliases.get(_key(name), IGNORE)
        if target in used:
            target = IGNORE
        if not target and kind == "contacts" and name and _key(name) not in NOT_IMPORTED:
            target = ATTRIBUTE_PREFIX + (re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "x")
        if target and not target.startswith(ATTRIBUTE_PREFIX):
            used.add(target)
        mapping.append(target)
    return mapping


def targets(kind: str) -> list[tuple[str, str]]:
    return CONTACT_TARGETS if kind == "contacts" else ACTIVITY_TARGETS


@dataclass
class ImportReport:
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0
    contacts_created: int = 0
    # (line number, message) for every row that was not stored, in file order.
    errors: list[tuple[int, str]] = field(default_factory=list)
    # (line, earlier line) for a contact row whose email an earlier row of its chunk had:
    # the two are one contact (later non-empty values win, contacts_upsert), counted once
    # as created/updated/unchanged — so the repeat is listed and counted here. (A repeat
    # in a later chunk updates the contact the earlier one stored: counted as updated.)
    merged: list[tuple[int, int]] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return len({line for line, _ in self.errors})


def _mapped(cells: list[str], mapping: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    attributes: dict[str, str] = {}
    for value, target in zip(cells, mapping, strict=False):
        if not target:
            continue
        value = unneutralise(value.strip())  # our own export's "'+49 …" is "+49 …"
        if target.startswith(ATTRIBUTE_PREFIX):
            if value:
                attributes[target.removeprefix(ATTRIBUTE_PREFIX)[:100]] = value
        elif value:
            row[target] = value
    if attributes:
        row["attributes"] = attributes
    return row


def _message(errors: dict[str, list[str]]) -> str:
    return "; ".join(
        f"{name}: {' '.join(messages)}" if name != "non_field_errors" else " ".join(messages)
        for name, messages in errors.items()
    )


def run_import(*, text: str, kind: str, mapping: list[str], by=None) -> ImportReport:
    header, rows = read_rows(text)
    if len(mapping) != len(header):
        raise ImportError_("The column mapping does not match the file; upload it again.")
    wanted = {"email"} if kind == "contacts" else {"kind", "occurred_at"}
    missing = wanted - set(mapping)
    if missing:
        raise ImportError_(f"Map a column to: {', '.join(sorted(missing))}.")
    report = ImportReport(rows=len(rows))
    # A row with more cells than the header holds an unquoted delimiter ("Smith, Jr."):
    # which value belongs to which column is a guess, so the row is refused, not shifted.
    # (Fewer cells are blanks: some tools leave empty trailing cells out.)
    too_long = [(line, len(cells)) for line, cells in rows if len(cells) > len(header)]
    for line, count in too_long:
        report.errors.append(
            (
                line,
                f"{count} cells but the header has {len(header)}: a value with a "
                f"delimiter in it needs quotes.",
            )
        )
    rows = [(line, cells) for line, cells in rows if len(cells) <= len(header)]
    runner = _import_contacts if kind == "contacts" else _import_activities
    for start in range(0, len(rows), CHUNK):
        runner(rows[start : start + CHUNK], mapping, report, by)
    report.errors.sort()
    return report


def _import_contacts(chunk, mapping, report: ImportReport, by) -> None:
    valid, lines = [], []
    first_line: dict[str, int] = {}
    for line, cells in chunk:
        clean, errors = services.contact_row_clean(_mapped(cells, mapping))
        if errors:
            report.errors.append((line, _message(errors)))
            continue
        valid.append(clean)
        lines.append(line)
        email = Contact.normalise_email(clean["email"])
        if email in first_line:
            report.merged.append((line, first_line[email]))
        else:
            first_line[email] = line
    if not valid:
        return
    result = services.contacts_upsert(rows=valid, by=by, source=Source.IMPORT)
    report.created += result.created
    report.updated += result.updated
    report.unchanged += result.unchanged
    for index, errors in result.errors.items():
        report.errors.append((lines[index], "Saved, but " + _message(errors)))


def _import_activities(chunk, mapping, report: ImportReport, by) -> None:
    items = [_mapped(cells, mapping) for _, cells in chunk]
    errors = ingest.validate_items(items)
    for index, item_errors in errors.items():
        report.errors.append((chunk[index][0], _message(item_errors)))
    valid = [(chunk[i][0], item) for i, item in enumerate(items) if i not in errors]
    while valid:
        try:
            result = ingest.activities_record(
                items=[item for _, item in valid], source=Source.IMPORT, by_user=by
            )
        except ingest.IngestError as exc:  # e.g. a contact deleted since validation: retry
            for index, item_errors in exc.errors.items():
                report.errors.append((valid[index][0], _message(item_errors)))
            valid = [pair for i, pair in enumerate(valid) if i not in exc.errors]
            continue
        report.created += result.created
        report.duplicates += result.duplicates
        report.contacts_created += result.contacts_created
        return
