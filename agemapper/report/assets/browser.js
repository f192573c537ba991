// Glue of the association browser: rows from the embedded data, the DataTables table, the
// two Vega-Lite views, and the filters that act on all of them. No framework: DataTables and
// vega-embed do the work; this file only wires them together.
const byId = (id) => document.getElementById(id);

// The libraries, the data and the chart specifications are stored gzipped (base64): unpack
// them, add the CSS, run Vega (a classic script) and DataTables (a module), then go on.
async function unpack(id) {
  const bytes = Uint8Array.from(atob(byId(id).textContent.trim()), (c) => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Response(stream).text();
}
function runScript(code, type) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    if (type === "module") {
      script.type = "module";
      window.addEventListener("agemapper-module-done", resolve, { once: true });
      code += '\nwindow.dispatchEvent(new Event("agemapper-module-done"));';
    }
    script.onerror = reject;
    script.textContent = code;
    document.head.appendChild(script);
    if (type !== "module") resolve();
  });
}
const [vegaCode, dtCode, dtCss, dataText, manhattanText, summaryText] = await Promise.all(
  ["pack-vega", "pack-datatables", "pack-datatables-css", "pack-data", "pack-manhattan", "pack-summary"].map(unpack),
);
const style = document.createElement("style");
style.textContent = dtCss;
document.head.appendChild(style);
await runScript(vegaCode);
await runScript(dtCode, "module");
const data = JSON.parse(dataText);
const meta = data.meta;

function rowsOf(d) {
  const t = d.tests, nd = d.nidps, out = new Array(t.nidp.length);
  const col = (name, i) => (t[name] ? t[name][i] : null);
  for (let i = 0; i < out.length; i++) {
    const j = t.nidp[i];
    const rep = col("rep", i);
    out[i] = {
      id: i,
      contrast: d.contrasts[t.contrast[i]],
      sex: d.sexes[t.sex[i]],
      nidp: nd.name[j],
      title: nd.title[j],
      field: nd.field[j],
      category: d.categories[nd.category[j]],
      x: nd.x[j],
      n: t.n[i],
      r: t.r[i],
      p: t.p[i],
      neglog10_p: t.lp[i],
      p_corr: t.pc[i],
      significant: t.sig[i] === 1,
      r_B: col("rB", i),
      p_B_corr: col("pBc", i),
      replicated: rep === null ? null : rep === 1,
      replicated_text: rep === null ? "" : rep === 1 ? "yes" : t.sig[i] === 1 ? "no" : "",
    };
  }
  return out;
}

const fmt = (digits) => (v, type) => {
  if (type !== "display" && type !== "filter") return v === null ? Number.POSITIVE_INFINITY : v;
  if (v === null || v === undefined) return "";
  return Math.abs(v) >= 1e-3 || v === 0 ? String(+v.toPrecision(digits)) : v.toExponential(digits - 1);
};

function fillSelect(id, values) {
  const select = byId(id);
  for (const v of values) {
    const option = document.createElement("option");
    option.value = v;
    option.textContent = v;
    select.appendChild(option);
  }
}

const state = { contrast: "", sex: "", category: "", text: "", significant: false, replicated: false };

function passes(row) {
  return (
    (!state.contrast || row.contrast === state.contrast) &&
    (!state.sex || row.sex === state.sex) &&
    (!state.category || row.category === state.category) &&
    (!state.significant || row.significant) &&
    (!state.replicated || row.replicated === true)
  );
}

const rows = rowsOf(data);
const method = meta.method;
byId("summary").textContent =
  `${meta.tests.toLocaleString()} tests; ${meta.significant.toLocaleString()} significant ` +
  `(${method} < ${meta.alpha})` +
  (meta.replication ? `, ${meta.replicated.toLocaleString()} of them replicated in half B` : "") +
  `. This page holds ${meta.note}.`;
fillSelect("f-contrast", data.contrasts);
fillSelect("f-sex", data.sexes);
fillSelect("f-category", data.categories);
if (!meta.replication) byId("f-replicated-label").style.display = "none";

const columns = [
  { data: "contrast", title: "contrast" },
  { data: "sex", title: "sex" },
  {
    data: "title",
    title: "nIDP",
    render: (v, type, row) =>
      type === "display" ? `${escapeHtml(v)} <span class="code">${escapeHtml(row.nidp)}</span>` : `${v} ${row.nidp}`,
  },
  { data: "category", title: "category" },
  { data: "n", title: "n", type: "num" },
  { data: "r", title: "r", type: "num", render: fmt(3) },
  { data: "p", title: "p", type: "num", render: fmt(3) },
  { data: "p_corr", title: `p (${method})`, type: "num", render: fmt(3) },
];
if (meta.replication) {
  columns.push(
    { data: "r_B", title: "r, half B", type: "num", render: fmt(3) },
    { data: "p_B_corr", title: `p, half B (${method} over discoveries)`, type: "num", render: fmt(3) },
    { data: "replicated_text", title: "replicated" },
  );
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

const DataTable = window.DataTable;
DataTable.ext.search.push((settings, searchData, index, row) => settings.nTable.id !== "tests" || passes(row));
const table = new DataTable("#tests", {
  data: rows,
  columns,
  deferRender: true,
  pageLength: 25,
  lengthMenu: [10, 25, 100, 500],
  order: [[6, "asc"]],
  createdRow: (tr, row) => {
    if (row.significant) tr.classList.add("significant");
  },
});

const embed = { renderer: "canvas", actions: false, tooltip: { theme: "light" } };
function specWith(text) {
  const spec = JSON.parse(text);
  spec.datasets = Object.assign(spec.datasets || {}, { tests: rows });
  return spec;
}
const [manhattan, summary] = await Promise.all([
  vegaEmbed("#manhattan", specWith(manhattanText), embed),
  vegaEmbed("#summary-chart", specWith(summaryText), embed),
]);

async function apply() {
  table.draw();
  manhattan.view
    .signal("sel_contrast", state.contrast)
    .signal("sel_sex", state.sex)
    .signal("sel_category", state.category)
    .signal("sel_text", state.text.toLowerCase())
    .signal("sel_significant", state.significant)
    .signal("sel_replicated", state.replicated);
  summary.view.signal("sel_contrast", state.contrast).signal("sel_category", state.category);
  await Promise.all([manhattan.view.runAsync(), summary.view.runAsync()]);
}

function readControls() {
  state.contrast = byId("f-contrast").value;
  state.sex = byId("f-sex").value;
  state.category = byId("f-category").value;
  state.significant = byId("f-significant").checked;
  state.replicated = byId("f-replicated").checked;
  return apply();
}

function setControls(values) {
  for (const [key, value] of Object.entries(values)) {
    const input = byId(`f-${key}`);
    if (input.type === "checkbox") input.checked = value;
    else input.value = value;
  }
  return readControls();
}

for (const id of ["f-contrast", "f-sex", "f-category", "f-significant", "f-replicated"]) {
  byId(id).addEventListener("change", readControls);
}
byId("f-text").addEventListener("input", () => {
  state.text = byId("f-text").value;
  table.search(state.text).draw();
  manhattan.view.signal("sel_text", state.text.toLowerCase()).runAsync();
});
byId("f-reset").addEventListener("click", () => {
  byId("f-text").value = "";
  state.text = "";
  table.search("");
  return setControls({ contrast: "", sex: "", category: "", significant: false, replicated: false });
});

summary.view.addEventListener("click", (event, item) => {
  const d = item && item.datum;
  if (!d || d.contrast === undefined || d.category === undefined) return;
  setControls({ contrast: d.contrast, category: d.category }).then(() =>
    byId("table-heading").scrollIntoView(),
  );
});
manhattan.view.addEventListener("click", (event, item) => {
  const d = item && item.datum;
  if (!d || d.nidp === undefined || d.id === undefined) return;
  byId("f-text").value = d.nidp;
  state.text = d.nidp;
  table.search(d.nidp).draw();
  manhattan.view.signal("sel_text", d.nidp.toLowerCase()).runAsync();
  byId("table-heading").scrollIntoView();
});

window.agemapperBrowser = { table, manhattan: manhattan.view, summary: summary.view, rows, setControls };
document.body.dataset.ready = String(Math.round(performance.now()));
