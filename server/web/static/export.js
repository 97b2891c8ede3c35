// Export form: the "CSV now" link follows the chosen venues and days; "choose all" and
// "choose none" tick or clear every venue that may be exported.
(function () {
  var link = document.getElementById("quick-csv");
  var start = document.getElementById("start");
  var end = document.getElementById("end");
  if (!link || !start || !end) return;
  var boxes = Array.prototype.slice.call(document.querySelectorAll("#venues input[name=venue]"))
    .filter(function (box) { return !box.disabled; });
  var base = link.getAttribute("href").split("?")[0];
  function update() {
    var query = boxes.filter(function (box) { return box.checked; })
      .map(function (box) { return "venue=" + encodeURIComponent(box.value); });
    query.push("from=" + encodeURIComponent(start.value), "to=" + encodeURIComponent(end.value));
    link.setAttribute("href", base + "?" + query.join("&"));
  }
  function setAll(value) {
    boxes.forEach(function (box) { box.checked = value; });
    update();
  }
  ["input", "change"].forEach(function (kind) {
    start.addEventListener(kind, update);
    end.addEventListener(kind, update);
  });
  boxes.forEach(function (box) { box.addEventListener("change", update); });
  var switches = document.getElementById("venue-switches");
  if (switches) {
    switches.hidden = false;
    document.getElementById("venues-all").addEventListener("click", function () { setAll(true); });
    document.getElementById("venues-none").addEventListener("click", function () { setAll(false); });
  }
})();

// Export progress: poll the job's JSON status and move the bar until the file is ready.
(function () {
  var box = document.getElementById("export-job");
  if (!box) return;
  var bar = document.getElementById("export-bar");
  var percent = document.getElementById("export-percent");
  var rows = document.getElementById("export-rows");
  var state = document.getElementById("export-state");
  var error = document.getElementById("export-error");
  var download = document.getElementById("export-download");
  var url = box.getAttribute("data-status-url");
  var rowsText = box.getAttribute("data-rows-text");
  var delay = 500;

  function show(job) {
    bar.value = job.percent;
    bar.textContent = job.percent + " %";
    percent.textContent = job.percent + " %";
    rows.textContent = rowsText.replace("{done}", job.rows_done).replace("{total}", job.total);
    state.textContent = box.getAttribute("data-state-" + job.state) || job.state;
    if (job.error_text) {
      error.textContent = job.error_text;
      error.hidden = false;
    }
    download.hidden = !job.download_url;
  }

  function poll() {
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) {
        if (!response.ok) throw new Error("status " + response.status);
        return response.json();
      })
      .then(function (job) {
        show(job);
        if (job.state === "queued" || job.state === "running") {
          delay = Math.min(delay * 1.3, 3000);
          window.setTimeout(poll, delay);
        }
      })
      .catch(function () { window.setTimeout(poll, 3000); });
  }

  poll();
})();
