// Every page (no inline script: the Content-Security-Policy allows scripts from this
// site's files only):
// - a form marked data-confirm asks before it is sent (data-confirm-if: only when a
//   field has a given value);
// - tables fit the screen: each cell learns its column's name (data-label, from the
//   table's header), a table too wide for a phone reads as one card per row (.cards),
//   and one that still does not fit scrolls sideways in its own box with a visible
//   hint and a shadow on the side where more waits (the classes: top of style.css);
// - the menu (a <details>) stays open on a wide screen, where it is one row; on a
//   phone a tap outside it or Escape folds it.
(function () {
  "use strict";
  var PHONE = window.matchMedia("(max-width: 40rem)");
  var WIDE = window.matchMedia("(min-width: 52.01rem)");

  // data-confirm-if="name=value" asks only when that field has that value (a roster
  // upload asks before "replace", not before "merge").
  function asks(form) {
    var condition = form.getAttribute("data-confirm-if");
    if (!condition) return true;
    var parts = condition.split("=");
    var field = form.elements.namedItem(parts[0]);
    return Boolean(field) && field.value === parts.slice(1).join("=");
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form && form.getAttribute && form.getAttribute("data-confirm");
    if (question && asks(form) && !window.confirm(question)) {
      event.preventDefault();
    }
  }, true);

  function each(list, fn) { Array.prototype.forEach.call(list, fn); }

  function labelCells(table) {
    var head = table.tHead && table.tHead.rows[table.tHead.rows.length - 1];
    if (!head) return;
    var names = [];
    each(head.cells, function (th) {
      for (var i = 0; i < (th.colSpan || 1); i++) names.push(th.textContent.trim());
    });
    each(table.tBodies, function (body) {
      each(body.rows, function (row) {
        if (row.cells.length < 2) return;  // a row that only says "nothing yet"
        var column = 0;
        each(row.cells, function (cell) {
          if (!cell.hasAttribute("data-label")) cell.setAttribute("data-label", names[column] || "");
          column += cell.colSpan || 1;
        });
      });
    });
  }

  function boxOf(table) {
    var parent = table.parentElement;
    if (parent.classList.contains("scroll")) return parent;
    var box = document.createElement("div");
    box.className = "scroll";
    parent.insertBefore(box, table);
    box.appendChild(table);
    return box;
  }

  function hintOf(box) {
    var hint = box.previousElementSibling;
    if (hint && hint.classList.contains("scroll-hint")) return hint;
    hint = document.createElement("p");
    hint.className = "scroll-hint";
    hint.textContent = document.body.getAttribute("data-scroll-hint") || "";
    hint.hidden = true;
    box.parentElement.insertBefore(hint, box);
    return hint;
  }

  function edges(box) {
    box.classList.toggle("more-left", box.scrollLeft > 1);
    box.classList.toggle("more-right", box.scrollLeft + box.clientWidth < box.scrollWidth - 1);
  }

  function fit(table) {
    var box = boxOf(table);
    if (table.getAttribute("data-auto-cards") === "1") {
      table.classList.remove("cards");
      table.removeAttribute("data-auto-cards");
    }
    if (PHONE.matches && !table.classList.contains("wide") && !table.classList.contains("cards")
        && !table.classList.contains("stack") && box.scrollWidth > box.clientWidth + 1) {
      table.classList.add("cards");
      table.setAttribute("data-auto-cards", "1");
    }
    hintOf(box).hidden = box.scrollWidth <= box.clientWidth + 1;
    edges(box);
  }

  function fitAll() {
    each(document.querySelectorAll("main table"), function (table) {
      if (table.offsetParent !== null || table.getAttribute("data-auto-cards") === "1") fit(table);
    });
  }

  function menu() {
    var details = document.getElementById("menu");
    if (details) details.open = WIDE.matches;
  }

  // On a phone the open menu lies over the page: a tap elsewhere or Escape folds it.
  function foldMenu(event) {
    var details = document.getElementById("menu");
    if (!details || !details.open || WIDE.matches) return;
    if (event.type === "keydown" ? event.key === "Escape" : !details.contains(event.target)) details.open = false;
  }
  document.addEventListener("click", foldMenu);
  document.addEventListener("keydown", foldMenu);

  function start() {
    each(document.querySelectorAll("main table"), function (table) {
      labelCells(table);
      boxOf(table).addEventListener("scroll", function (event) { edges(event.currentTarget); }, { passive: true });
    });
    fitAll();
    menu();
  }

  var pending = false;
  function later() {
    if (pending) return;
    pending = true;
    window.requestAnimationFrame(function () { pending = false; fitAll(); });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
  window.addEventListener("resize", later);
  document.addEventListener("toggle", later, true);  // a <details> opened: its tables are measured now
  if (WIDE.addEventListener) WIDE.addEventListener("change", menu);
})();
