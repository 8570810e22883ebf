// Keeps the relative times beside each UTC time current while the page stays open.
"use strict";
(function () {
  function span(ms) {
    var s = Math.floor(Math.abs(ms) / 1000);
    if (s < 60) return s + "s";
    var m = Math.floor(s / 60); s = s % 60;
    if (m < 60) return (m >= 10 || !s) ? m + "m" : m + "m " + s + "s";
    var h = Math.floor(m / 60); m = m % 60;
    if (h < 24) return m ? h + "h " + m + "m" : h + "h";
    var d = Math.floor(h / 24); h = h % 24;
    return h ? d + "d " + h + "h" : d + "d";
  }
  function refresh() {
    var now = Date.now();
    document.querySelectorAll("[data-ago]").forEach(function (el) {
      var delta = now - Number(el.getAttribute("data-ago"));
      el.textContent = Math.abs(delta) < 1000 ? "just now"
        : delta > 0 ? span(delta) + " ago" : "in " + span(delta);
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    refresh();
    setInterval(refresh, 10000);
  });
})();
