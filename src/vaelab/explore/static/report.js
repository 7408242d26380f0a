// The report's live latent maps: each `.live` block holds a run's map and generator; decode in the page.
"use strict";

(function (vaelab) {
  const maps = [];
  window.vaelabReport = maps;  // for the browser tests and the benchmark
  for (const box of document.querySelectorAll(".live")) {
    const { map, models } = JSON.parse(box.querySelector("script[type='application/json']").textContent);
    const live = new vaelab.LatentMap({
      map: box.querySelector(".live-map"),
      decoded: box.querySelector(".live-decoded"),
      decodedInfo: box.querySelector(".live-z"),
      strip: box.querySelector(".live-strip"),
      stripInfo: box.querySelector(".live-strip-info"),
    }, { steps: () => 10 });
    live.show(map, { generator: vaelab.nn.load(models.generator) });
    vaelab.fillLegend(box.querySelector(".legend"), map.class_names, map.colors);
    box.hidden = false;
    live.showPoint(new Array(map.plane_mean.length).fill(0));
    maps.push(live);
  }
})(window.vaelab = window.vaelab || {});
