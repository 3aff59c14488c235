// Proof of revenue, checked in the browser (financing/merkle.py states the rules):
// leaf = SHA256(0x00 || record bytes); for each proof entry p:
// h = SHA256(0x01 || min(h, p) || max(h, p)); valid when h equals the root on chain.
(function () {
  "use strict";
  var button = document.getElementById("verify");
  var out = document.getElementById("verify-result");
  var source = document.getElementById("proof-data");
  if (!button || !out || !source) return;
  var proof = JSON.parse(source.textContent);

  function show(ok, message) {
    out.className = ok ? "verify-ok" : "verify-bad";
    out.textContent = (ok ? "✓ " : "✗ ") + message;
  }

  function fromHex(hex) {
    var clean = hex.replace(/^0x/, "");
    var bytes = new Uint8Array(clean.length / 2);
    for (var i = 0; i < bytes.length; i++) bytes[i] = parseInt(clean.substr(i * 2, 2), 16);
    return bytes;
  }

  function toHex(bytes) {
    return "0x" + Array.prototype.map.call(bytes, function (b) {
      return b.toString(16).padStart(2, "0");
    }).join("");
  }

  function concat(prefix, parts) {
    var length = 1 + parts.reduce(function (n, p) { return n + p.length; }, 0);
    var out = new Uint8Array(length);
    out[0] = prefix;
    var at = 1;
    parts.forEach(function (p) { out.set(p, at); at += p.length; });
    return out;
  }

  function lessOrEqual(a, b) {
    for (var i = 0; i < a.length; i++) {
      if (a[i] !== b[i]) return a[i] < b[i];
    }
    return true;
  }

  function sha256(bytes) {
    return crypto.subtle.digest("SHA-256", bytes).then(function (d) { return new Uint8Array(d); });
  }

  async function verify() {
    if (!(window.crypto && crypto.subtle)) {
      show(false, "This browser offers no WebCrypto here (it needs HTTPS or localhost).");
      return;
    }
    var leaf = await sha256(concat(0x00, [new TextEncoder().encode(proof.data)]));
    if (toHex(leaf) !== proof.leaf) {
      show(false, "The record does not hash to the leaf shown: " + toHex(leaf));
      return;
    }
    var node = leaf;
    for (var i = 0; i < proof.proof.length; i++) {
      var sibling = fromHex(proof.proof[i]);
      node = await sha256(lessOrEqual(node, sibling) ? concat(0x01, [node, sibling]) : concat(0x01, [sibling, node]));
    }
    var root = toHex(node);
    if (!proof.root) {
      show(false, "Computed root " + root + ", but no root is anchored on chain yet.");
    } else if (root === proof.root.toLowerCase()) {
      show(true, "Verified: the record leads to the root anchored on chain, " + root + ".");
    } else {
      show(false, "Computed root " + root + " differs from the root on chain " + proof.root + ".");
    }
  }

  button.addEventListener("click", function () {
    out.className = "";
    out.textContent = "Checking…";
    verify().catch(function (err) { show(false, "The check failed: " + err); });
  });
})();
