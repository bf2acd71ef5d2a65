"""CSV import: upload → preview with column mapping → import with per-row errors.

The decoded file sits in the session (database-backed, so any web process can finish the
import) between the steps; marketing only (ARCHITECTURE.md roles).
"""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from .. import imports
from ..forms import ImportUploadForm
from ..roles import MARKETING_ONLY, allow

SESSION_KEY = "crm_import"
PREVIEW_ROWS = 10


@require_http_methods(["GET", "POST"])
@allow(MARKETING_ONLY)
def import_upload(request):
    form = ImportUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        if upload.size > imports.MAX_BYTES:
            form.add_error("file", "The file is larger than 5 MB; split it into parts.")
        else:
            try:
                decoded = imports.decode(upload.read())
                header, _ = imports.read_rows(decoded.text)
            except imports.ImportError_ as exc:
                form.add_error("file", str(exc))
            else:
                request.session[SESSION_KEY] = {
                    "kind": form.cleaned_data["kind"],
                    "name": upload.name[:200],
                    "text": decoded.text,
                    "notice": decoded.notice,  # shown by the preview page, once
                }
                return redirect("crm:import-preview")
    return render(request, "crm/imports/upload.html", {"form": form})


@require_http_methods(["GET", "POST"])
@allow(MARKETING_ONLY)
def import_preview(request):
    stored = request.session.get(SESSION_KEY)
    if not stored:
        messages.error(request, "Upload a file first.")
        return redirect("crm:import-upload")
    kind = stored["kind"]
    header, rows = imports.read_rows(stored["text"])
    targets = imports.targets(kind)
    allowed = {t for t, _ in targets}
    if request.method == "POST":
        mapping = []
        for index, _name in enumerate(header):
            value = request.POST.get(f"col{index}", "")
            ok = value in allowed or value.startswith(imports.ATTRIBUTE_PREFIX) or not value
            mapping.append(value if ok else "")
        try:
            report = imports.run_import(
                text=stored["text"], kind=kind, mapping=mapping, by=request.user
            )
        except imports.ImportError_ as exc:
            messages.error(request, str(exc))
        else:
            del request.session[SESSION_KEY]
            return render(
                request,
                "crm/imports/result.html",
                {"report": report, "kind": kind, "name": stored["name"]},
            )
    else:
        mapping = imports.auto_mapping(header, kind)
    columns = [
        {
            "index": i,
            "name": name,
            "target": target,
            "attribute": target if target.startswith(imports.ATTRIBUTE_PREFIX) else "",
            "samples": [cells[i] if i < len(cells) else "" for _, cells in rows[:3]],
        }
        for i, (name, target) in enumerate(zip(header, mapping, strict=True))
    ]
    return render(
        request,
        "crm/imports/preview.html",
        {
            "stored": stored,
            "kind": kind,
            "columns": columns,
            "targets": targets,
            "rows": rows[:PREVIEW_ROWS],
            "header": header,
            "total": len(rows),
        },
    )
