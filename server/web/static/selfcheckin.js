// Self check-in: remember the person's details in this browser only (localStorage),
// so the next visit is one tap. Nothing is sent anywhere but the form itself.
(function () {
  var KEY = "qrgate.self.person";
  var form = document.getElementById("self-form");
  var fields = ["id_number", "name", "birth_year"];
  var saved = {};
  try { saved = JSON.parse(window.localStorage.getItem(KEY) || "{}") || {}; } catch (e) { saved = {}; }
  if (form) {
    fields.forEach(function (name) {
      var input = document.getElementById(name);
      if (input && !input.value && typeof saved[name] === "string") input.value = saved[name];
    });
    form.addEventListener("submit", function () {
      var person = {};
      fields.forEach(function (name) { person[name] = document.getElementById(name).value; });
      try { window.localStorage.setItem(KEY, JSON.stringify(person)); } catch (e) { /* private mode: no memory */ }
    });
  }
})();
