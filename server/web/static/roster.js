// Roster page: "select all" for the pass checkboxes. (A revocation's confirmation is
// site.js's, from the form's data-confirm.)
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", function () {
      document.querySelectorAll("input.pick").forEach(function (box) { box.checked = all.checked; });
    });
  }
});
