// Draws the overview's charts with uPlot from /admin/api/traffic (the traffic roll-up).
(function () {
  var series = [
    {},
    { label: "accepted", stroke: "#2456d6", width: 2 },
    { label: "sent", stroke: "#7c3aed", width: 2 },
    { label: "delivered", stroke: "#1f7a3a", width: 2 },
    { label: "failed", stroke: "#b42318", width: 2 },
  ];
  function draw(el) {
    fetch("/admin/api/traffic?range=" + el.dataset.range, { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (d) {
        el.innerHTML = "";
        var opts = { width: el.clientWidth || 600, height: 240, series: series,
                     scales: { x: { time: true } }, axes: [{}, { label: "parts" }] };
        new uPlot(opts, [d.t, d.accepted, d.sent, d.delivered, d.failed], el);
        el.dataset.drawn = "1";
      });
  }
  document.querySelectorAll(".chart[data-range]").forEach(function (el) {
    draw(el);
    setInterval(function () { draw(el); }, 15000);
  });
})();
