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
  function pickPeriod() {
    var period = document.querySelector(".report-filters select[name=period]");
    if (!period) return;
    period.addEventListener("change", function () {
      var custom = period.value === "custom" || period.value === "";
      document.querySelectorAll(".report-filters input[type=date]").forEach(function (i) {
        i.disabled = !custom;
      });
    });
  }
  document.addEventListener("DOMContentLoaded", function () { draw(); pickPeriod(); });
})();
