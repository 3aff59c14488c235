// Your own wallet, through the page's EIP-1193 provider (window.ethereum):
// - link: eth_requestAccounts, the server's EIP-4361 message, personal_sign, back to the server;
// - vault calls: the server builds the unsigned transactions (approve + deposit, request_redeem,
//   cancel_redeem); the wallet sends each with eth_sendTransaction (waiting for one to be mined
//   before the next), and the last hash goes back to the server, which shows it pending until
//   the chain watcher credits it.
(function () {
  "use strict";
  var root = document.getElementById("own-wallet");
  if (!root) return;
  var out = document.getElementById("own-wallet-status");

  function say(text, bad) {
    if (!out) return;
    out.textContent = text;
    out.className = bad ? "errorlist" : "muted";
  }

  function csrf() {
    var input = root.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf() },
      body: JSON.stringify(body),
    }).then(function (response) {
      return response.json().then(function (data) {
        if (!response.ok) {
          var errors = data.errors || {};
          var messages = [];
          Object.keys(errors).forEach(function (field) { messages = messages.concat(errors[field]); });
          throw new Error(messages.join(" ") || "The server answered " + response.status + ".");
        }
        return data;
      });
    });
  }

  function wallet() {
    if (!window.ethereum || typeof window.ethereum.request !== "function") {
      throw new Error("No Ethereum wallet was found in this browser.");
    }
    return window.ethereum;
  }

  function utf8Hex(text) {
    var bytes = new TextEncoder().encode(text);
    return "0x" + Array.prototype.map.call(bytes, function (b) { return b.toString(16).padStart(2, "0"); }).join("");
  }

  function sleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  function mined(hash, tries) {
    return wallet().request({ method: "eth_getTransactionReceipt", params: [hash] }).then(function (receipt) {
      if (receipt && receipt.blockNumber) {
        if (receipt.status === "0x0") throw new Error("The transaction " + hash + " reverted.");
        return receipt;
      }
      if (tries <= 0) throw new Error("The transaction " + hash + " is not mined yet; try again later.");
      return sleep(1000).then(function () { return mined(hash, tries - 1); });
    });
  }

  function fail(error) {
    say(error && error.message ? error.message : String(error), true);
  }

  var linkButton = document.getElementById("link-wallet");
  if (linkButton) {
    linkButton.addEventListener("click", function () {
      var address;
      say("Asking your wallet for its address…");
      Promise.resolve()
        .then(function () { return wallet().request({ method: "eth_requestAccounts", params: [] }); })
        .then(function (accounts) {
          if (!accounts || !accounts.length) throw new Error("Your wallet shared no account.");
          address = accounts[0];
          return post(root.dataset.nonceUrl, { address: address });
        })
        .then(function (issued) {
          say("Sign the message in your wallet…");
          return wallet()
            .request({ method: "personal_sign", params: [utf8Hex(issued.message), issued.address] })
            .then(function (signature) { return post(root.dataset.linkUrl, { message: issued.message, signature: signature }); });
        })
        .then(function () { window.location.reload(); })
        .catch(fail);
    });
  }

  function ensureChain(chainId) {
    return wallet().request({ method: "eth_chainId", params: [] }).then(function (current) {
      if (parseInt(current, 16) === parseInt(chainId, 16)) return null;
      return wallet().request({ method: "wallet_switchEthereumChain", params: [{ chainId: chainId }] });
    });
  }

  function sendAll(transactions) {
    var last = null;
    return transactions.reduce(function (done, call, index) {
      return done.then(function () {
        say(call.label + ": confirm it in your wallet…");
        return wallet().request({ method: "eth_sendTransaction", params: [call.tx] }).then(function (hash) {
          last = hash;
          if (index < transactions.length - 1) {
            say(call.label + ": waiting for it to be mined…");
            return mined(hash, 120);
          }
          return null;
        });
      });
    }, Promise.resolve()).then(function () { return last; });
  }

  Array.prototype.forEach.call(document.querySelectorAll("form[data-wallet-kind]"), function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var body = { kind: form.dataset.walletKind };
      Array.prototype.forEach.call(form.querySelectorAll("input[data-field]"), function (input) {
        if (input.value !== "") body[input.dataset.field] = input.value;
      });
      say("Preparing the transaction…");
      post(root.dataset.callsUrl, body)
        .then(function (built) {
          return ensureChain(built.chain_id).then(function () { return sendAll(built.transactions); });
        })
        .then(function (hash) {
          body.tx_hash = hash;
          return post(root.dataset.submitUrl, body);
        })
        .then(function () { window.location.reload(); })
        .catch(fail);
    });
  });
})();
