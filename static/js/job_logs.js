// The job page's "Follow live": stream the pod log (chunked text/plain) into the log box, appending
// each chunk as it arrives, until the server ends the stream (the container ended, or the cap);
// while following, job.js leaves the log box alone (data-following). No inline script (CSP).
(function () {
  "use strict";
  var button = document.getElementById("job-log-follow");
  var logs = document.getElementById("job-logs");
  var state = document.getElementById("job-log-state");
  if (!button || !logs || !window.fetch || !window.TextDecoder) return;
  var controller = null;

  function say(text) {
    if (state) state.textContent = text;
  }

  function stop(message) {
    if (controller) controller.abort();
    controller = null;
    delete logs.dataset.following;
    button.textContent = "Follow live";
    say(message || "");
  }

  function follow() {
    controller = new AbortController();
    logs.dataset.following = "1";
    logs.textContent = "";
    button.textContent = "Stop following";
    say("following…");
    var decoder = new TextDecoder();
    fetch(button.dataset.streamUrl, { credentials: "same-origin", signal: controller.signal })
      .then(function (response) {
        if (!response.ok || !response.body) throw new Error("HTTP " + response.status);
        var reader = response.body.getReader();
        function pump() {
          return reader.read().then(function (part) {
            if (part.done) {
              logs.textContent += decoder.decode();
              stop("the stream ended");
              return;
            }
            var atBottom = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
            logs.textContent += decoder.decode(part.value, { stream: true });
            if (atBottom) logs.scrollTop = logs.scrollHeight;
            return pump();
          });
        }
        return pump();
      })
      .catch(function (error) {
        if (error && error.name === "AbortError") return;
        stop("could not follow the log (" + error.message + ")");
      });
  }

  button.addEventListener("click", function () {
    if (controller) stop("stopped");
    else follow();
  });
})();
