// The job page: refresh status, progress and the log tail without reloading.
(function () {
  "use strict";
  var root = document.getElementById("job");
  if (!root) return;
  var url = root.dataset.statusUrl;
  var live = { pending: true, running: true };
  function text(id, value) {
    var el = document.getElementById(id);
    if (el) el.textContent = value;
  }
  function render(s) {
    text("job-status", s.status_label);
    document.getElementById("job-status").className = "status-" + s.status;
    text("job-message", s.message);
    text("job-node", s.node || "—");
    text("job-attempt", s.attempt);
    text("job-gpu-seconds", s.gpu_seconds.toLocaleString());
    var bar = document.getElementById("job-progress");
    bar.setAttribute("aria-valuenow", s.progress);
    bar.firstElementChild.style.width = s.progress + "%";
    text("job-progress-label", s.progress + "%");
    var logs = document.getElementById("job-logs");
    if (!logs.dataset.following) {  // job_logs.js streams into it while following
      var atBottom = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
      logs.textContent = s.logs || "(no output yet)";
      if (atBottom) logs.scrollTop = logs.scrollHeight;
    }
    var events = document.getElementById("job-events");
    events.replaceChildren.apply(events, s.events.map(function (e) {
      var li = document.createElement("li");
      li.textContent = e.at.slice(0, 19).replace("T", " ") + " · " + e.kind + " · " + e.message;
      return li;
    }));
    var cancel = document.getElementById("job-cancel");
    if (cancel && !live[s.status]) cancel.remove();
    return live[s.status];
  }
  function poll() {
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) {
        if (s && render(s)) setTimeout(poll, 3000);
      })
      .catch(function () { setTimeout(poll, 10000); });
  }
  setTimeout(poll, 3000);
})();
