// Cards through Stripe.js, for every <form data-card-form> (templates/marketplace/_card_form.html).
// data-mode="payment": confirmCardPayment(client secret, a new card Element or a saved card's id),
// 3-D Secure handled by Stripe.js; data-mode="setup": confirmCardSetup saves a card. A failure is
// shown in the form (role="alert") and the renter can try again; on success the browser goes to
// data-return-url, where the server reads the intent back (the webhook confirms it too).
"use strict";
(function () {
  function show(form, message) {
    const box = form.querySelector("[data-card-errors]");
    box.textContent = message;
    box.hidden = !message;
  }

  function savedChoice(form) {
    const picked = form.querySelector("input[name=card]:checked");
    return picked ? picked.value : "";
  }

  function billingDetails(form) {
    const details = {};
    if (form.dataset.billingName) details.name = form.dataset.billingName;
    if (form.dataset.billingEmail) details.email = form.dataset.billingEmail;
    return details;
  }

  function setUp(form) {
    const button = form.querySelector("button[type=submit]");
    if (typeof window.Stripe !== "function") {
      show(form, "The card form could not be loaded; reload the page to try again.");
      button.disabled = true;
      return;
    }
    const stripe = window.Stripe(form.dataset.publishableKey);
    const card = stripe.elements().create("card");
    card.mount(form.querySelector("[data-card-element]"));
    const newCard = form.querySelector("[data-new-card]");
    form.addEventListener("change", function (event) {
      if (event.target.name === "card") newCard.hidden = Boolean(savedChoice(form));
    });

    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      show(form, "");
      button.disabled = true;
      const secret = form.dataset.clientSecret;
      let result;
      try {
        if (form.dataset.mode === "setup") {
          result = await stripe.confirmCardSetup(secret, {
            payment_method: { card: card, billing_details: billingDetails(form) },
          });
        } else {
          const saved = savedChoice(form);
          const data = saved
            ? { payment_method: saved }
            : { payment_method: { card: card, billing_details: billingDetails(form) } };
          const save = form.querySelector("input[name=save_card]");
          if (!saved && save && save.checked) data.setup_future_usage = "off_session";
          result = await stripe.confirmCardPayment(secret, data);
        }
      } catch (error) {
        result = { error: { message: "The payment service could not be reached; try again." } };
      }
      if (result.error) {
        show(form, result.error.message || "The card was not accepted; try again or use another card.");
        button.disabled = false;
        return;
      }
      const intent = result.paymentIntent || result.setupIntent;
      const next = new URL(form.dataset.returnUrl, window.location.href);
      next.searchParams.set(result.paymentIntent ? "payment_intent" : "setup_intent", intent.id);
      window.location.assign(next.toString());
    });
  }

  document.querySelectorAll("form[data-card-form]").forEach(setUp);
})();
