"""Contact writes: edit, bulk upsert (imports and the API), owner assignment, merge."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, models, transaction
from django.db.models.functions import Lower
from django.utils import timezone

from .. import activity_queue, campaign_members, events, lifecycle
from ..countries import country_code
from ..models import (
    Activity,
    CampaignMember,
    Company,
    ConsentBasis,
    Contact,
    Deal,
    EmailStatus,
    LifecycleTransition,
    Reopening,
    SegmentChange,
    SegmentMembership,
    Source,
    Stage,
)
from .base import contacts_create_bulk

# Profile fields a person may edit or an import may set (stage goes through the lifecycle).
EDITABLE_FIELDS = (
    "email",
    "first_name",
    "last_name",
    "job_title",
    "phone",
    "company",
    "country",
    "timezone",
    "source",
    "acquired_by",
    "owner",
    "email_status",
    "consent_basis",
    "consent_given_at",
    "consent_source",
    "attributes",
)
TEXT_LIMITS = {
    "first_name": 100,
    "last_name": 100,
    "job_title": 200,
    "phone": 50,
    "timezone": 64,
    "consent_source": 200,
}
# Blank fields of the kept contact that a merge fills from the duplicate.
MERGE_FILL_FIELDS = (
    "first_name",
    "last_name",
    "job_title",
    "phone",
    "company_id",
    "country",
    "timezone",
    "acquired_by_id",
    "owner_id",
    "consent_given_at",
    "consent_source",
)


def _key(value: str) -> str:
    return re.sub(r"[^a-z0-9]", "", value.lower())


# HubSpot "Lifecycle Stage" and Salesforce-style values, compared without case or spaces.
STAGE_SYNONYMS = {
    **{_key(s.value): s.value for s in Stage},
    **{_key(s.label): s.value for s in Stage},
    "subscriber": Stage.LEAD,
    "newlead": Stage.LEAD,
    "marketingqualifiedlead": Stage.MQL,
    "salesqualifiedlead": Stage.SQL,
    "salesacceptedlead": Stage.SQL,
    "evangelist": Stage.CUSTOMER,
    "closedwon": Stage.CUSTOMER,
    "unqualified": Stage.DISQUALIFIED,
}
SOURCE_SYNONYMS = {
    **{_key(s.value): s.value for s in Source},
    **{_key(s.label): s.value for s in Source},
    "web": Source.WEB_FORM,
    "website": Source.WEB_FORM,
    "webform": Source.WEB_FORM,
    "tradeshow": Source.EVENT,
    "seminar": Source.EVENT,
    "paidsearch": Source.PAID,
    "paidsocial": Source.PAID,
    "advertisement": Source.PAID,
    "socialmedia": Source.SOCIAL,
    "partnerreferral": Source.REFERRAL,
    "employeereferral": Source.REFERRAL,
    "organicsearch": Source.ORGANIC,
    "offlinesources": Source.IMPORT,
}


def contact_row_clean(raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Validate one imported/upserted contact row; return (clean fields, field errors).

    Blank values are left out (a blank cell means "unknown", never "erase"). Names and
    other text are stored exactly as given (a formula or ``<script>`` is just text; it is
    escaped when rendered and neutralised on export).
    """
    clean: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}

    def fail(name: str, message: str) -> None:
        errors.setdefault(name, []).append(message)

    def text(name: str) -> str:
        value = raw.get(name)
        return "" if value is None else str(value).strip()

    email = Contact.normalise_email(text("email"))
    if not email:
        fail("email", "An email address is required.")
    else:
        try:
            validate_email(email)
            clean["email"] = email
        except ValidationError:
            fail("email", f"{email[:80]!r} is not a valid email address.")
    for name, limit in TEXT_LIMITS.items():
        value = text(name)
        if len(value) > limit:
            fail(name, f"At most {limit} characters.")
        elif value:
            clean[name] = value
    country = text("country")
    if country:
        # Exports name countries ("United States", "Deutschland"); the row keeps the code.
        if code := country_code(country):
            clean["country"] = code
        else:
            fail(
                "country",
                f"Unknown country {country[:60]!r}: use a two-letter ISO code such as DE or US, "
                "or the country's name.",
            )
    if company := text("company_name"):
        clean["company_name"] = company[:200]
    if stage := text("stage"):
        if _key(stage) in STAGE_SYNONYMS:
            clean["stage"] = STAGE_SYNONYMS[_key(stage)]
        else:
            fail("stage", f"Unknown lifecycle stage {stage[:40]!r}.")
    attributes = (
        dict(raw.get("attributes") or {}) if isinstance(raw.get("attributes"), dict) else {}
    )
    if raw.get("attributes") not in (None, "", {}) and not isinstance(raw.get("attributes"), dict):
        fail("attributes", "attributes must be an object.")
    if source := text("source"):
        # Unknown sources are kept verbatim as an attribute, so nothing is lost.
        clean["source"] = SOURCE_SYNONYMS.get(_key(source), Source.OTHER)
        if _key(source) not in SOURCE_SYNONYMS:
            attributes["lead_source"] = source[:200]
    if lead_status := text("lead_status"):
        attributes["lead_status"] = lead_status[:200]
    for name, choices in (("email_status", EmailStatus), ("consent_basis", ConsentBasis)):
        if value := text(name):
            if value.lower() in choices.values:
                clean[name] = value.lower()
            else:
                fail(name, f"Use one of: {', '.join(choices.values)}.")
    if attributes:
        clean["attributes"] = {str(k)[:100]: v for k, v in attributes.items()}
    return clean, errors


@dataclass
class UpsertResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    # Row index → field errors for rows whose stage move the lifecycle refused.
    errors: dict[int, dict[str, list[str]]] = field(default_factory=dict)
    contact_ids: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "errors": {str(k): v for k, v in self.errors.items()},
        }


def _companies_by_name(names: set[str]) -> dict[str, Company]:
    """Resolve company names case-insensitively, creating the missing ones in one insert."""
    if not names:
        return {}
    wanted = {n.lower(): n for n in names}
    found: dict[str, Company] = {}
    for company in Company.objects.annotate(lname=Lower("name")).filter(lname__in=list(wanted)):
        found.setdefault(company.lname, company)
    missing = [Company(name=name) for key, name in wanted.items() if key not in found]
    for company in Company.objects.bulk_create(missing):
        found[company.name.lower()] = company
    return found


def contacts_upsert(*, rows: Sequence[dict[str, Any]], by=None, source: str = Source.IMPORT):
    """Create or update contacts keyed by normalised email (set-based).

    ``rows`` are clean dicts from :func:`contact_row_clean`. One query finds the existing
    emails; new contacts are created with their initial stage through
    :func:`contacts_create_bulk`; changed ones are saved with one ``bulk_update``. A stage
    on an existing contact is a lifecycle move (``stage_change``); a move the lifecycle
    refuses is reported for that row and the rest of the row is still saved. An import
    never re-activates a suppressed address.
    """
    result = UpsertResult()
    merged: dict[str, dict[str, Any]] = {}
    index_of: dict[str, int] = {}
    for index, row in enumerate(rows):
        email = Contact.normalise_email(row["email"])
        previous = merged.get(email, {})
        attrs = {**previous.get("attributes", {}), **row.get("attributes", {})}
        merged[email] = {**previous, **row, "email": email}
        if attrs:
            merged[email]["attributes"] = attrs
        index_of[email] = index
    if not merged:
        return result
    by_system = "" if by else "import"
    with transaction.atomic():
        companies = _companies_by_name(
            {r["company_name"] for r in merged.values() if r.get("company_name")}
        )
        for row in merged.values():
            if name := row.pop("company_name", None):
                row["company"] = companies[name.lower()]
        existing = {c.email: c for c in Contact.objects.filter(email__in=list(merged))}
        new_rows = [
            {"source": source, **row} for email, row in merged.items() if email not in existing
        ]
        created = contacts_create_bulk(rows=new_rows, by_user=by, by_system=by_system)
        result.created = len(created)
        result.contact_ids.extend(c.pk for c in created)

        changed: list[Contact] = []
        changed_fields: set[str] = set()
        stage_moves: list[tuple[Contact, str]] = []
        now = timezone.now()
        for email, contact in existing.items():
            row = dict(merged[email])
            if (stage := row.pop("stage", None)) and stage != contact.stage:
                stage_moves.append((contact, stage))
            if contact.email_status != EmailStatus.ACTIVE:
                row.pop("email_status", None)
            if "attributes" in row:
                row["attributes"] = {**contact.attributes, **row["attributes"]}
            diff = {k for k, v in row.items() if getattr(contact, k) != v}
            for name in diff:
                setattr(contact, name, row[name])
            if "email_status" in diff:
                contact.email_status_changed_at = now
                diff.add("email_status_changed_at")
            if diff:
                contact.updated_at = now
                changed.append(contact)
                changed_fields |= diff
            result.contact_ids.append(contact.pk)
        if changed:
            Contact.objects.bulk_update(changed, [*changed_fields, "updated_at"], batch_size=500)
            events.contacts_changed([c.pk for c in changed], fields=changed_fields, at=now)
        moved = set()
        for contact, stage in stage_moves:
            try:
                lifecycle.stage_edit(
                    contact=contact,
                    to_stage=stage,
                    by_user=by,
                    by_system=by_system,
                    reason_code="import",
                )
                moved.add(contact.pk)
            except lifecycle.StageChangeError as exc:
                result.errors[index_of[contact.email]] = {"stage": [str(exc)]}
        result.updated = len({c.pk for c in changed} | moved)
        result.unchanged = len(existing) - result.updated
    return result


def contact_update(*, contact: Contact, by=None, **fields) -> set[str]:
    """Edit a contact's profile; a new ``stage`` is a lifecycle move. Returns changed names."""
    unknown = set(fields) - set(EDITABLE_FIELDS) - {"stage"}
    if unknown:
        raise ValueError(f"Not editable: {', '.join(sorted(unknown))}")
    stage = fields.pop("stage", None)
    if "email" in fields:
        fields["email"] = Contact.normalise_email(fields["email"])
    changed = {k for k, v in fields.items() if getattr(contact, k) != v}
    now = timezone.now()
    with transaction.atomic():
        for name in changed:
            setattr(contact, name, fields[name])
        if "email_status" in changed:
            contact.email_status_changed_at = now
        if changed:
            try:
                with transaction.atomic():
                    contact.save(
                        update_fields=[
                            *changed,
                            "updated_at",
                            *(["email_status_changed_at"] if "email_status" in changed else []),
                        ]
                    )
            except IntegrityError as exc:
                raise ValidationError({"email": "Another contact has this email."}) from exc
            events.contacts_changed([contact.pk], fields=changed, at=now)
        if stage and stage != contact.stage:
            lifecycle.stage_edit(contact=contact, to_stage=stage, by_user=by, reason_code="edit")
            changed.add("stage")
    return changed


def contacts_assign_owner(*, contact_ids: Sequence[int], owner, by=None) -> int:
    """Give many contacts one owner (or none) with one UPDATE; returns how many changed."""
    ids = list(contact_ids)
    now = timezone.now()
    with transaction.atomic():
        qs = Contact.objects.filter(pk__in=ids)
        qs = qs.exclude(owner=owner) if owner else qs.filter(owner__isnull=False)
        count = qs.update(owner=owner, updated_at=now)
        events.contacts_changed(ids, fields={"owner"}, at=now)
    return count


def contact_merge(*, keep: Contact, duplicate: Contact, by=None) -> Contact:
    """Merge two records of one person into the older one, in one transaction.

    History, activities, deals, re-openings and segment memberships move to the kept
    contact (memberships it already has and re-openings of a round it already has are
    dropped); blank profile fields are filled from the duplicate, custom attributes are
    combined (the kept contact's values win); the duplicate is deleted. Other apps move
    what needs care first (``CONTACTS_MERGING_HANDLERS``: nurture's enrollments and sends);
    their remaining rows that point at the duplicate (score ledger …) are moved too when
    their own unique rules allow, otherwise they go with the duplicate.
    """
    if keep.pk == duplicate.pk:
        raise ValidationError("A contact cannot be merged with itself.")
    if (duplicate.created_at, duplicate.pk) < (keep.created_at, keep.pk):
        keep, duplicate = duplicate, keep
    with transaction.atomic():
        locked = {
            c.pk: c
            for c in Contact.objects.select_for_update().filter(pk__in=[keep.pk, duplicate.pk])
        }
        keep, duplicate = locked[keep.pk], locked[duplicate.pk]
        dup_id, keep_id = duplicate.pk, keep.pk
        Activity.objects.filter(contact_id=dup_id).update(contact_id=keep_id)
        # Batches still queued name the duplicate for the moved activities (crm.activity_queue).
        activity_queue.batches_repoint(duplicate_id=dup_id, keep_id=keep_id)
        # The kept contact's campaigns from its activities, now both contacts' (bounded).
        campaign_members.members_rebuild(contact_ids=[keep_id])
        moved = list(
            LifecycleTransition.objects.filter(contact_id=dup_id).values_list("pk", flat=True)
        )
        LifecycleTransition.objects.filter(contact_id=dup_id).update(contact_id=keep_id)
        lifecycle.stage_resync(contact=keep, duplicate=duplicate)
        Deal.objects.filter(contact_id=dup_id).update(contact_id=keep_id)
        kept_rounds = Reopening.objects.filter(contact_id=keep_id).values("recycle_round")
        Reopening.objects.filter(contact_id=dup_id).exclude(recycle_round__in=kept_rounds).update(
            contact_id=keep_id
        )
        kept_segments = SegmentMembership.objects.filter(contact_id=keep_id).values("segment_id")
        SegmentMembership.objects.filter(contact_id=dup_id).exclude(
            segment_id__in=kept_segments
        ).update(contact_id=keep_id)
        SegmentChange.objects.filter(contact_id=dup_id).update(contact_id=keep_id)
        at = timezone.now()
        events.contacts_merging(
            keep_id=keep_id, duplicate_id=dup_id, at=at, moved_transition_ids=moved
        )
        _move_other_relations(dup_id, keep_id)

        changed = _merge_suppression(keep, duplicate)
        for name in MERGE_FILL_FIELDS:
            if getattr(keep, name) in ("", None) and getattr(duplicate, name) not in ("", None):
                setattr(keep, name, getattr(duplicate, name))
                changed.add(name)
        if duplicate.attributes:
            keep.attributes = {**duplicate.attributes, **keep.attributes}
            changed.add("attributes")
        duplicate.delete()
        keep.save(update_fields=[*changed, "updated_at"])
        events.contacts_changed(
            [keep_id], fields={n.removesuffix("_id") for n in changed} | {"merged"}, at=at
        )
    return keep


# The person's own "stop" (an unsubscribe, a spam complaint) follows them to the merged
# record, the stronger first; a hard bounce is the duplicate's address's, which the merge
# drops, so it does not suppress the kept address.
PERSON_SUPPRESSION = (EmailStatus.COMPLAINED, EmailStatus.UNSUBSCRIBED)


def _merge_suppression(keep: Contact, duplicate: Contact) -> set[str]:
    """Combine what the two records say about emailing the person; return changed fields.

    Suppression never lifts: the kept record takes the duplicate's unsubscribe or
    complaint when its own status is weaker (active, hard-bounced, or an unsubscribe
    against the duplicate's complaint). Consent recorded on either record is the
    person's: a kept record without any takes the duplicate's basis, time and source.
    """
    changed = set()
    rank = {status: i for i, status in enumerate(PERSON_SUPPRESSION)}
    theirs, ours = duplicate.email_status, keep.email_status
    if theirs in rank and rank[theirs] < rank.get(ours, len(rank)):
        keep.email_status = theirs
        keep.email_status_changed_at = duplicate.email_status_changed_at
        changed |= {"email_status", "email_status_changed_at"}
    if keep.consent_basis == ConsentBasis.NONE and duplicate.consent_basis != ConsentBasis.NONE:
        for name in ("consent_basis", "consent_given_at", "consent_source"):
            setattr(keep, name, getattr(duplicate, name))
            changed.add(name)
    return changed


_HANDLED = {
    Activity,
    CampaignMember,
    LifecycleTransition,
    Deal,
    Reopening,
    SegmentMembership,
    SegmentChange,
}


def _move_other_relations(dup_id: int, keep_id: int) -> None:
    """Re-point rows of other apps' models at the kept contact, each in a savepoint —
    hidden relations too (``related_name="+"``: report facts, the score ledger when no
    handler moved it). A row its unique rule keeps from moving goes with the duplicate: by
    cascade, or here for a plain contact-id column (``DO_NOTHING``), which would dangle."""
    for rel in Contact._meta.get_fields(include_hidden=True):
        if not (rel.auto_created and not rel.concrete and rel.one_to_many):
            continue
        if rel.related_model in _HANDLED or rel.on_delete not in (
            models.CASCADE,
            models.DO_NOTHING,
        ):
            continue
        rows = rel.related_model._base_manager.filter(**{rel.field.name: dup_id})
        try:
            with transaction.atomic():
                rows.update(**{rel.field.name: keep_id})
        except IntegrityError:
            if rel.on_delete is models.DO_NOTHING:
                rows.delete()
