// Report charts: the data comes from {{ chart|json_script:"report-chart-data" }} (CSP-safe).
(function () {
  "use strict";
  function draw() {
    var el = document.getElementById("report-chart-data");
    var canvas = document.getElementById("report-chart");
    if (!el || !canvas || typeof window.Chart === "undefined") return;
    var cfg = JSON.parse(el.textContent);
    new window.Chart(canvas, {
      type: cfg.type,
      data: { labels: cfg.labels, datasets: cfg.datasets },
      options: { responsive: true, maintainAspectRatio: false, spanGaps: true },
    });
  }
  // The period is either a preset or the two dates: typing a date picks "Custom" (a preset
  // still selected would silently win over the dates typed next to it), and picking a
  // preset clears the dates.
  function pickPeriod() {
    var period = document.querySelector(".report-filters select[name=period]");
    if (!period) return;
    var dates = document.querySelectorAll(".report-filters input[type=date]");
    dates.forEach(function (input) {
      input.addEventListener("input", function () { period.value = "custom"; });
    });
    period.addEventListener("change", function () {
      if (period.value !== "custom" && period.value !== "") {
        dates.forEach(function (input) { input.value = ""; });
      }
    });
  }
  document.addEventListener("DOMContentLoaded", function () { draw(); pickPeriod(); });
})();
