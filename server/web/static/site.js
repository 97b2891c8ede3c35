// Every page: a form marked data-confirm asks before it is sent (no inline script: the
// Content-Security-Policy allows scripts from this site's files only).
document.addEventListener("submit", function (event) {
  var form = event.target;
  var question = form && form.getAttribute && form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
}, true);
