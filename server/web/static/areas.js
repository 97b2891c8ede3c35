// Venue form: when the province changes, offer that province's communes and wards
// (asked from /api/areas/<code>; the page carries only the chosen province's, since
// the whole country is 3,321 of them).
(function () {
  var province = document.getElementById("province");
  var ward = document.getElementById("ward");
  if (!province || !ward) return;
  var choose = ward.getAttribute("data-choose") || "";
  function fill(wards) {
    while (ward.options.length) ward.remove(0);
    ward.add(new Option(choose, ""));
    wards.forEach(function (w) { ward.add(new Option(w.name, w.code)); });
    ward.disabled = false;
  }
  province.addEventListener("change", function () {
    if (!province.value) { fill([]); return; }
    ward.disabled = true;
    fetch("/api/areas/" + encodeURIComponent(province.value), {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.json() : {wards: []}; })
      .then(function (data) { fill(data.wards || []); })
      .catch(function () { fill([]); });
  });
})();
