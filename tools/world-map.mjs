// Writes crates/server/ui/world.svgpath: the land outline of Natural Earth's 1:110m data
// (public domain), from the `world-atlas` npm package (ISC), in an equirectangular
// projection 1000 × 500 (x = (lon + 180) / 360 × 1000, y = (90 − lat) / 180 × 500), one SVG
// path. The dashboard draws regions on it without fetching anything from outside.
//
//   npm install world-atlas@2.0.2 topojson-client@3.1.0 && node tools/world-map.mjs
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { feature } from "topojson-client";

const require = createRequire(import.meta.url);
const topo = JSON.parse(readFileSync(require.resolve("world-atlas/land-110m.json"), "utf8"));
const land = feature(topo, topo.objects.land);
const px = ([lon, lat]) => [((lon + 180) / 360) * 1000, ((90 - lat) / 180) * 500];
let d = "";
// A ring that runs along the antimeridian or the map's edge would draw a line across the
// map: a jump of more than half the width starts a new subpath instead.
const ring = (r) => {
  let prev = null;
  r.forEach((p) => {
    const [x, y] = px(p);
    const jump = prev === null || Math.abs(x - prev) > 500;
    d += `${jump ? "M" : "L"}${x.toFixed(1)},${y.toFixed(1)}`;
    prev = x;
  });
  d += "Z";
};
for (const f of land.features) {
  const g = f.geometry;
  const polys = g.type === "Polygon" ? [g.coordinates] : g.coordinates;
  for (const poly of polys) poly.forEach(ring);
}
const out = new URL("../crates/server/ui/world.svgpath", import.meta.url);
writeFileSync(out, d + "\n");
console.log(`wrote ${out.pathname}: ${d.length} bytes`);
