// Glue for the table pages: sort a table by a column (click its header; again to reverse) and
// filter the rows of every table on the page by text. Numbers sort by their value (data-v),
// text alphabetically; empty cells sort last.
const filter = document.querySelector("input.filter");
const count = document.querySelector("span.count");
const tables = [...document.querySelectorAll("table.data")];
const allRows = tables.flatMap((table) => [...table.tBodies[0].rows]);

function show() {
  const needle = filter ? filter.value.trim().toLowerCase() : "";
  let shown = 0;
  for (const row of allRows) {
    const keep = !needle || row.textContent.toLowerCase().includes(needle);
    row.hidden = !keep;
    shown += keep;
  }
  if (count) count.textContent = `${shown} of ${allRows.length} rows shown`;
}

for (const table of tables) {
  const body = table.tBodies[0];
  const rows = [...body.rows];
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
}
if (filter) filter.addEventListener("input", show);
show();
