// Timeline filter by host and severity. The page reads fully without it: the form stays
// hidden unless this runs. It reads only data-* attributes the report wrote (host anchor ids
// and severity ranks) and the page's own query string, never evidence text.
(function () {
  var form = document.getElementById("tl-filter");
  if (!form) { return; }
  form.hidden = false;
  var rows = document.querySelectorAll("#timeline tbody tr");
  function apply() {
    var host = form.elements.host.value, min = Number(form.elements.sev.value), shown = 0;
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i];
      var ok = (!host || r.getAttribute("data-host") === host) && Number(r.getAttribute("data-sev")) >= min;
      r.hidden = !ok;
      if (ok) { shown++; }
    }
    document.getElementById("tl-count").textContent = shown + " shown";
  }
  // report.html?host=<host anchor id>&sev=<0-4> opens the timeline filtered (a link to share);
  // a value that matches no option leaves that filter off.
  var query = new URLSearchParams(window.location.search);
  if (query.has("host")) { form.elements.host.value = query.get("host"); }
  if (query.has("sev")) { form.elements.sev.value = query.get("sev"); }
  if (form.elements.host.selectedIndex < 0) { form.elements.host.selectedIndex = 0; }
  if (form.elements.sev.selectedIndex < 0) { form.elements.sev.selectedIndex = 0; }
  form.addEventListener("change", apply);
  apply();
})();
