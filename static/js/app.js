// Small progressive enhancements; the site works without JavaScript.
// No inline scripts anywhere: the Content-Security-Policy forbids them.
document.addEventListener("DOMContentLoaded", () => {
  // <button data-confirm="..."> asks before submitting.
  document.body.addEventListener("click", (event) => {
    const el = event.target.closest("[data-confirm]");
    if (el && !window.confirm(el.dataset.confirm)) event.preventDefault();
  });
  // <select data-autosubmit> submits its form on change.
  document.body.addEventListener("change", (event) => {
    if (event.target.matches("[data-autosubmit]")) event.target.form.requestSubmit();
  });
  // <input type="checkbox" data-select-all="name"> toggles every checkbox of that name.
  document.body.addEventListener("change", (event) => {
    const name = event.target.dataset && event.target.dataset.selectAll;
    if (!name) return;
    document.querySelectorAll(`input[type=checkbox][name="${name}"]`).forEach((box) => {
      box.checked = event.target.checked;
    });
  });
});
