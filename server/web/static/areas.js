// Venue form: show only the districts and wards of the chosen province (and district).
(function () {
  var province = document.getElementById("province");
  var district = document.getElementById("district");
  var ward = document.getElementById("ward");
  if (!province || !district || !ward) return;
  function filter(select, parents) {
    var any = false;
    Array.prototype.forEach.call(select.options, function (opt) {
      if (!opt.value) return;
      var show = parents.indexOf(opt.getAttribute("data-parent")) !== -1;
      opt.hidden = !show;
      opt.disabled = !show;
      if (show) any = true;
      if (!show && opt.selected) select.value = "";
    });
    return any;
  }
  function update() {
    var hasDistricts = filter(district, [province.value]);
    district.style.display = hasDistricts ? "" : "none";
    var label = document.querySelector("label[for=district]");
    if (label) label.style.display = hasDistricts ? "" : "none";
    filter(ward, hasDistricts ? [district.value] : [province.value]);
  }
  province.addEventListener("change", update);
  district.addEventListener("change", update);
  update();
})();
