// Glue for a table page: sort by a column (click its header; again to reverse) and filter rows
// by text. Numbers sort by their value (data-v), text alphabetically; empty cells sort last.
for (const table of document.querySelectorAll("table.data")) {
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  const filter = document.querySelector("input.filter");
  const count = document.querySelector("span.count");
  const show = () => {
    const needle = filter ? filter.value.trim().toLowerCase() : "";
    let shown = 0;
    for (const row of rows) {
      const keep = !needle || row.textContent.toLowerCase().includes(needle);
      row.hidden = !keep;
      shown += keep;
    }
    if (count) count.textContent = `${shown} of ${rows.length} rows shown`;
  };
  if (filter) filter.addEventListener("input", show);
  table.tHead.querySelectorAll("th").forEach((th, k) => {
    th.addEventListener("click", () => {
      const ascending = th.dataset.order !== "asc";
      table.tHead.querySelectorAll("th").forEach((h) => delete h.dataset.order);
      th.dataset.order = ascending ? "asc" : "desc";
      const numeric = th.dataset.type === "num";
      const key = (row) => row.cells[k].dataset.v;
      rows.sort((a, b) => {
        const x = key(a), y = key(b);
        if (x === "" || y === "") return (x === "") - (y === "");
        const c = numeric ? Number(x) - Number(y) : x.localeCompare(y);
        return ascending ? c : -c;
      });
      body.append(...rows);
    });
  });
  show();
}
