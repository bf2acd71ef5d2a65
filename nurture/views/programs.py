"""Program list, builder and program page (marketing/admin write; sales read)."""

from __future__ import annotations

from django.contrib import messages
from django.db import transaction
from django.http import HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from crm.roles import MARKETING_WRITES, allow

from .. import queries
from ..forms import EnrollForm, ProgramForm, StepForm, TriggerForm
from ..models import Enrollment, Program, Step, Trigger
from ..services import programs as program_services
from ..services.enrollment import contacts_enroll, enrollment_remove, program_enroll_segment

# The program page holds three forms with fields of the same name (kind, segment): distinct
# id prefixes keep every <label for> pointing at its own form's field.
STEP_IDS = "step_%s"


@allow(MARKETING_WRITES)
def program_list(request):
    programs = queries.programs_with_counts().order_by("name")
    return render(request, "nurture/program_list.html", {"programs": programs})


@allow(MARKETING_WRITES)
def program_create(request):
    form = ProgramForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            program = form.save(commit=False)
            program.created_by = request.user
            program.save()
            program_services.program_change_note(
                program=program, by=request.user, summary="Program created"
            )
        return redirect(program)
    return render(request, "nurture/program_form.html", {"form": form, "program": None})


@allow(MARKETING_WRITES)
def program_edit(request, pk: int):
    program = get_object_or_404(Program, pk=pk)
    form = ProgramForm(request.POST or None, instance=program)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            form.save()
            program_services.program_edited(
                program=program, fields=form.changed_data, by=request.user
            )
        return redirect(program)
    return render(request, "nurture/program_form.html", {"form": form, "program": program})


def _steps_context(program: Program) -> dict:
    steps = list(program.steps.select_related("template").order_by("position", "id"))
    number = {s.pk: i + 1 for i, s in enumerate(steps)}
    summary = queries.program_summary(program)
    funnel = queries.step_funnel(program)
    rows = []
    for s in steps:
        cfg = s.config or {}
        rows.append(
            {
                "step": s,
                "number": number[s.pk],
                "yes": number.get(cfg.get("yes_step")),
                "no": number.get(cfg.get("no_step")),
                "condition": (cfg.get("condition") or {}),
                "funnel": funnel.get(s.pk, {}),
                "here": summary["at_step"].get(s.pk, 0),
            }
        )
    return {
        "program": program,
        "rows": rows,
        "summary": summary,
        "step_form": StepForm(auto_id=STEP_IDS),
    }


@allow(MARKETING_WRITES)
def program_detail(request, pk: int):
    program = get_object_or_404(Program.objects.select_related("campaign", "audience"), pk=pk)
    context = _steps_context(program)
    context.update(
        {
            "triggers": program.triggers.select_related("segment", "campaign"),
            "trigger_form": TriggerForm(auto_id="trigger_%s"),
            "enroll_form": EnrollForm(auto_id="enroll_%s"),
            "failed": queries.failed_sends(program),
            "enrollments": program.enrollments.select_related("contact", "current_step")[:25],
        }
    )
    return render(request, "nurture/program_detail.html", context)


@allow(MARKETING_WRITES)
@require_POST
def program_status(request, pk: int):
    program = get_object_or_404(Program, pk=pk)
    status = request.POST.get("status")
    if status not in Program.Status.values:
        return HttpResponseBadRequest("Unknown status.")
    try:
        program_services.program_set_status(program=program, status=status, by=request.user)
    except program_services.ProgramArchived as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Program is now {program.get_status_display().lower()}.")
    return redirect(program)


def _steps_response(request, program: Program):
    if request.htmx:
        return render(request, "nurture/_steps.html", _steps_context(program))
    return redirect(program)


@allow(MARKETING_WRITES)
@require_POST
def step_add(request, pk: int):
    program = get_object_or_404(Program, pk=pk)
    form = StepForm(request.POST, auto_id=STEP_IDS, program=program)
    if not form.is_valid():
        context = _steps_context(program) | {"step_form": form}
        return render(
            request, "nurture/_steps.html", context, status=400 if not request.htmx else 200
        )
    step = form.save(commit=False)
    step.program = program
    program_services.step_create(step=step, by=request.user)
    return _steps_response(request, program)


@allow(MARKETING_WRITES)
def step_edit(request, pk: int, step_id: int):
    step = get_object_or_404(Step, pk=step_id, program_id=pk)
    form = StepForm(request.POST or None, instance=step)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            form.save()
            program_services.step_edited(step=step, fields=form.changed_data, by=request.user)
        return _steps_response(request, step.program)
    return render(request, "nurture/step_form.html", {"form": form, "step": step})


@allow(MARKETING_WRITES)
@require_POST
def step_move(request, pk: int, step_id: int):
    step = get_object_or_404(Step, pk=step_id, program_id=pk)
    direction = request.POST.get("direction")
    if direction not in ("up", "down"):
        return HttpResponseBadRequest("direction is up or down")
    program_services.step_move(step=step, up=direction == "up", by=request.user)
    return _steps_response(request, step.program)


@allow(MARKETING_WRITES)
@require_POST
def step_delete(request, pk: int, step_id: int):
    step = get_object_or_404(Step, pk=step_id, program_id=pk)
    program = step.program
    program_services.step_delete(step=step, by=request.user)
    return _steps_response(request, program)


@allow(MARKETING_WRITES)
@require_POST
def trigger_add(request, pk: int):
    program = get_object_or_404(Program, pk=pk)
    form = TriggerForm(request.POST)
    if form.is_valid():
        trigger = form.save(commit=False)
        trigger.program = program
        program_services.trigger_create(trigger=trigger, by=request.user)
        messages.success(request, "Entry rule added.")
    else:
        messages.error(
            request,
            "Entry rule not added: "
            + "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()),
        )
    return redirect(program)


@allow(MARKETING_WRITES)
@require_POST
def trigger_delete(request, pk: int, trigger_id: int):
    trigger = get_object_or_404(Trigger, pk=trigger_id, program_id=pk)
    program_services.trigger_delete(trigger=trigger, by=request.user)
    return redirect("nurture:program-detail", pk=pk)


@allow(MARKETING_WRITES)
@require_POST
def program_enroll(request, pk: int):
    program = get_object_or_404(Program, pk=pk)
    form = EnrollForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(e for errs in form.errors.values() for e in errs))
        return redirect(program)
    entered = 0
    if form.cleaned_data.get("segment"):
        entered += program_enroll_segment(
            program=program, segment_id=form.cleaned_data["segment"].pk
        )
    if form.cleaned_data.get("contact_ids"):
        with transaction.atomic():
            entered += contacts_enroll(
                program=program, contact_ids=form.cleaned_data["contact_ids"], source="manual"
            )
    messages.success(request, f"{entered} contact(s) enrolled.")
    return redirect(program)


@allow(MARKETING_WRITES)
@require_POST
def enrollment_exit(request, pk: int, enrollment_id: int):
    enrollment = get_object_or_404(Enrollment, pk=enrollment_id, program_id=pk)
    enrollment_remove(enrollment=enrollment)
    return redirect("nurture:program-detail", pk=pk)
