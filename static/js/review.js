// Long-term trend chart of a review-register item: one line per metric, per quarter.
document.addEventListener("DOMContentLoaded", () => {
  const canvas = document.getElementById("review-trend-chart");
  if (!canvas || typeof Chart === "undefined") return;
  const quarters = JSON.parse(document.getElementById(canvas.dataset.chartSource).textContent);
  const keys = quarters.length ? Object.keys(quarters[0].figures) : [];
  new Chart(canvas, {
    type: "line",
    data: {
      labels: quarters.map((q) => q.label),
      datasets: keys.map((key) => ({
        label: key.replaceAll("_", " "),
        data: quarters.map((q) => q.figures[key]),
        yAxisID: key.endsWith("rate") ? "rate" : "count",
        spanGaps: true,
      })),
    },
    options: {
      maintainAspectRatio: false,
      scales: {
        count: { type: "linear", position: "left", beginAtZero: true },
        rate: { type: "linear", position: "right", beginAtZero: true, grid: { drawOnChartArea: false } },
      },
    },
  });
});

// Dashboard long-term trend: counts on the left axis, rates on the right; drawn whenever
// htmx swaps the block in. Its data rides on the canvas (htmx drops a fragment's scripts).
function drawLongTerm(root) {
  const canvas = root.querySelector ? root.querySelector("[data-trend]") : null;
  if (!canvas || typeof Chart === "undefined" || canvas.dataset.drawn) return;
  const trend = JSON.parse(canvas.dataset.trend);
  canvas.dataset.drawn = "1";
  new Chart(canvas, {
    type: "line",
    data: {
      labels: trend.labels,
      datasets: trend.rows
        .filter((row) => !row.key.startsWith("cost") && !row.key.endsWith("revenue"))
        .map((row) => ({
          label: row.label,
          data: row.values,
          yAxisID: row.key.endsWith("rate") ? "rate" : "count",
          spanGaps: true,
        })),
    },
    options: {
      maintainAspectRatio: false,
      scales: {
        count: { type: "linear", position: "left", beginAtZero: true },
        rate: { type: "linear", position: "right", beginAtZero: true, grid: { drawOnChartArea: false } },
      },
    },
  });
}
document.addEventListener("htmx:afterSwap", () => drawLongTerm(document));
document.addEventListener("DOMContentLoaded", () => drawLongTerm(document));
