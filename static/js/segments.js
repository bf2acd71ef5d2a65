// Segment pages: the join/leave history chart (data from json_script; no inline scripts).
document.addEventListener("DOMContentLoaded", () => {
  const data = document.getElementById("segment-history");
  const canvas = document.getElementById("segment-history-chart");
  if (!data || !canvas || typeof Chart === "undefined") return;
  const history = JSON.parse(data.textContent);
  new Chart(canvas, {
    type: "bar",
    data: {
      labels: history.labels,
      datasets: [
        { label: "Joined", data: history.joined, backgroundColor: "#1c7c54" },
        { label: "Left", data: history.left.map((n) => -n), backgroundColor: "#b3261e" },
      ],
    },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      scales: { x: { stacked: true }, y: { stacked: true } },
    },
  });
});
