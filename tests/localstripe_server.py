"""pytest plugin: a localstripe server on 127.0.0.1 for tests of the Stripe gateway.

localstripe (https://github.com/adrienverge/localstripe) is a fake of the
Stripe API that the real ``stripe`` SDK can talk to over HTTP. Its own CLI
listens on every interface and pickles its state to /tmp/localstripe.pickle,
so this plugin runs its aiohttp app in a child process instead (this same
file, run as a script): bound to 127.0.0.1 on a port the kernel picks, state
in memory only. The child prints its port on stdout, and exits when its stdin
closes, so it cannot outlive the test run even if pytest is killed.

Fixtures:

* ``localstripe`` (session): a ``LocalStripe`` with ``url``, ``api_key``,
  ``webhook_secret``, ``reset()`` and ``add_webhook_endpoint(url, events)``;
* ``stripe_gateway`` (function): a ``StripeGateway`` pointed at it, after
  ``reset()`` so that each test starts from an empty server;
* ``stripe_client`` (function): a bare ``stripe.StripeClient`` on the same
  server, for tests to look at what the gateway created.

Five gaps between localstripe 1.15 and Stripe are closed in the child, where
they would otherwise hide gateway behaviour (all five are Stripe's documented
behaviour):

* idempotency keys: localstripe ignores ``Idempotency-Key``. A middleware
  replays the first response to a (API key, Idempotency-Key) pair, answers
  ``idempotency_error`` (400) when the key comes back with other parameters,
  and 409 while the first request is still running;
* ``description`` on a PaymentIntent: localstripe answers 400 "Unexpected
  description"; it is accepted and stored;
* refunds larger than what is left on the charge: localstripe accepts them;
  they are refused with Stripe's 400 ``amount_too_large`` (or
  ``charge_already_refunded``);
* listing PaymentIntents: localstripe answers 400 "Unexpected created" to the
  ``created`` filter and lists oldest first; ``GET /v1/payment_intents``
  filters by ``created`` (an integer, or a dict of ``gt``/``gte``/``lt``/``lte``)
  and lists newest first, as Stripe does (the money reconciler pages through it);
* cards confirmed in the browser: localstripe's Stripe.js ``confirmCardPayment``
  ignores its ``data`` argument (it only authenticates an intent that is
  already ``requires_action``) and its ``POST /v1/payment_intents/{id}/confirm``
  refuses a payment method. The patched server serves a Stripe.js
  (``/js.stripe.com/v3/``, see ``CONFIRM_CARD_PAYMENT_JS``) whose
  ``confirmCardPayment`` does what Stripe's does: it confirms the intent with
  ``payment_method_data`` (the card Element) or ``payment_method`` (a saved
  card's id) and the client secret, authenticated by the publishable key as
  localstripe's own ``confirmCardSetup`` is, then opens the 3-D Secure modal
  and authenticates if the intent ``requires_action``, and answers
  ``{paymentIntent}`` or ``{error}``. The confirm endpoint takes those
  parameters (and ``setup_future_usage``), an intent that failed can be
  confirmed again with another card, a failed authentication sends
  ``payment_intent.payment_failed``, the card 4000000000000002 is declined
  when charged (Stripe's generic decline), PaymentIntents keep
  ``receipt_email`` and ``setup_future_usage``, and a card confirmed with
  ``setup_future_usage`` or through a SetupIntent is attached to the intent's
  Customer (so it is listed as a saved card).

``reset()`` (``DELETE /_config/data``) empties localstripe's store, the
idempotency cache and the registered webhook endpoints. It does not cancel
deliveries already scheduled: localstripe posts each event about a second
after the change that caused it, to the endpoints registered at that moment,
so a test that registers an endpoint may receive events of earlier tests.
"""

import json
import os
import select
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import pytest

API_KEY = "sk_test_localstripe"
PUBLISHABLE_KEY = "pk_test_localstripe"
WEBHOOK_SECRET = "whsec_localstripe_test"
START_TIMEOUT_SECONDS = 20


@dataclass(frozen=True)
class LocalStripe:
    url: str  # e.g. "http://127.0.0.1:41234"
    api_key: str
    webhook_secret: str
    publishable_key: str = PUBLISHABLE_KEY

    @property
    def js_url(self) -> str:
        """Its Stripe.js, for ``STRIPE_JS_URL``."""
        return f"{self.url}/js.stripe.com/v3/"

    def reset(self) -> None:
        """Forget every object, idempotency key and webhook endpoint."""
        _request("DELETE", f"{self.url}/_config/data", self.api_key)

    def add_webhook_endpoint(self, url: str, events: list[str] | None = None) -> None:
        """Have localstripe POST its events to ``url``, signed with ``webhook_secret``.

        localstripe sends an event about a second after the change that causes
        it, once, and does not retry; ``events`` limits which types are sent.
        """
        body = {"url": url, "secret": self.webhook_secret}
        if events is not None:
            body["events"] = events
        _request("POST", f"{self.url}/_config/webhooks/{uuid.uuid4().hex}", self.api_key, body=body)


def _request(method: str, url: str, api_key: str, timeout: float = 5, body: dict | None = None) -> int:
    # No proxy: a proxy from the environment must not see 127.0.0.1 traffic.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    headers = {"Authorization": f"Bearer {api_key}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    with opener.open(request, timeout=timeout) as response:
        return response.status


def _read_port(process: subprocess.Popen, deadline: float) -> int:
    assert process.stdout is not None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            line = process.stdout.readline()
            if not line:
                break  # the child exited before binding
            return int(line)
        if process.poll() is not None:
            break
    raise RuntimeError("localstripe did not report its port")


def _wait_until_answering(server: LocalStripe, process: subprocess.Popen, deadline: float) -> None:
    while True:
        try:
            if _request("GET", f"{server.url}/v1/payment_intents?limit=1", server.api_key, timeout=2) == 200:
                return
        except (urllib.error.URLError, OSError):
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("localstripe did not start answering")
        time.sleep(0.05)


def _stop(process: subprocess.Popen) -> None:
    if process.stdin is not None:
        process.stdin.close()  # the child's signal to shut down
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    if process.stdout is not None:
        process.stdout.close()


@pytest.fixture(scope="session")
def localstripe() -> Iterator[LocalStripe]:
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT_SECONDS
            try:
                port = _read_port(process, deadline)
                server = LocalStripe(url=f"http://127.0.0.1:{port}", api_key=API_KEY, webhook_secret=WEBHOOK_SECRET)
                _wait_until_answering(server, process, deadline)
            except RuntimeError as error:
                stderr.seek(0)
                raise RuntimeError(f"{error}:\n{stderr.read().decode(errors='replace')[-4000:]}") from None
            yield server
        finally:
            _stop(process)


@pytest.fixture
def stripe_gateway(localstripe):
    from marketplace.payments.stripe_gateway import StripeGateway

    localstripe.reset()
    return StripeGateway(
        api_key=localstripe.api_key, api_base=localstripe.url, webhook_secret=localstripe.webhook_secret
    )


@pytest.fixture
def stripe_client(localstripe):
    import stripe

    return stripe.StripeClient(localstripe.api_key, base_addresses={"api": localstripe.url}, max_network_retries=0)


# --- The child process: localstripe's aiohttp app on 127.0.0.1.


def _patch_localstripe() -> None:
    """Close the gaps described in the module docstring."""
    from localstripe import resources
    from localstripe.errors import UserError

    # State in memory only: no /tmp/localstripe.pickle shared between runs.
    resources.Store.dump_to_disk = lambda self: None

    payment_intent_init = resources.PaymentIntent.__init__

    def payment_intent_with_description(
        self, *args, description=None, receipt_email=None, setup_future_usage=None, **kwargs
    ):
        if setup_future_usage not in (None, "", "off_session", "on_session"):
            raise UserError(400, "Invalid setup_future_usage", {"param": "setup_future_usage"})
        payment_intent_init(self, *args, **kwargs)
        self.description = description
        self.receipt_email = receipt_email
        self.setup_future_usage = setup_future_usage or None

    resources.PaymentIntent.__init__ = payment_intent_with_description

    refund_init = resources.Refund.__init__

    def refund_within_charge(self, charge=None, payment_intent=None, amount=None, **kwargs):
        charge_obj = None
        try:
            if payment_intent is not None:
                charge_obj = resources.PaymentIntent._api_retrieve(payment_intent).latest_charge
            elif charge is not None:
                charge_obj = resources.Charge._api_retrieve(charge)
        except UserError:
            charge_obj = None  # localstripe reports the unknown id itself
        if charge_obj is not None and charge_obj.status == "succeeded":
            left = charge_obj.amount - charge_obj.amount_refunded
            wanted = resources.try_convert_to_int(amount) if amount is not None else left
            if left <= 0:
                raise UserError(
                    400,
                    f"Charge {charge_obj.id} has already been refunded.",
                    {"code": "charge_already_refunded"},
                )
            if isinstance(wanted, int) and wanted > left:
                raise UserError(
                    400,
                    f"Refund amount (${Decimal(wanted) / 100:.2f}) is greater than unrefunded amount "
                    f"on charge (${Decimal(left) / 100:.2f})",
                    {"code": "amount_too_large", "param": "amount"},
                )
        refund_init(self, charge=charge, payment_intent=payment_intent, amount=amount, **kwargs)

    resources.Refund.__init__ = refund_within_charge

    list_all = resources.PaymentIntent._api_list_all  # StripeObject's: no filters, store order

    def payment_intents_list(cls, url, created=None, limit=None, starting_after=None, **kwargs):
        tests = []
        try:
            if isinstance(created, dict):
                bounds = {"gt": int.__gt__, "gte": int.__ge__, "lt": int.__lt__, "lte": int.__le__}
                assert created and set(created) <= set(bounds)
                for op, value in created.items():
                    tests.append((bounds[op], int(value)))
            elif created is not None:
                tests.append((int.__eq__, int(created)))
        except (AssertionError, TypeError, ValueError):
            raise UserError(
                400, "Invalid created: an integer, or gt/gte/lt/lte integers", {"param": "created"}
            ) from None
        page = list_all(url, limit=limit, starting_after=starting_after, **kwargs)
        kept = [pi for pi in page._list if all(test(int(pi.created), value) for test, value in tests)]
        # Newest first; the store keeps creation order, so ties (one second) go by it, newest first too.
        order = {id(pi): n for n, pi in enumerate(kept)}
        page._list = sorted(kept, key=lambda pi: (int(pi.created), order[id(pi)]), reverse=True)
        return page

    resources.PaymentIntent._api_list_all = classmethod(payment_intents_list)

    _patch_browser_cards(resources, UserError)


def _patch_browser_cards(resources, UserError) -> None:
    """The fifth gap: confirming PaymentIntents from the browser, with a card or a saved one."""
    from localstripe.webhooks import schedule_webhook

    PaymentIntent, PaymentMethod, SetupIntent = resources.PaymentIntent, resources.PaymentMethod, resources.SetupIntent

    charging_is_declined = PaymentMethod._charging_is_declined
    PaymentMethod._charging_is_declined = lambda self: (
        charging_is_declined(self) or (self.type == "card" and self._card_number == "4000000000000002")
    )

    def save_card(intent) -> None:
        # Stripe attaches the card to the intent's Customer once it succeeded "for future usage".
        if intent.customer and intent.payment_method and getattr(intent, "setup_future_usage", None):
            PaymentMethod._api_retrieve(intent.payment_method).customer = intent.customer

    on_success = PaymentIntent._on_success

    def on_success_saving_the_card(self):
        save_card(self)
        on_success(self)

    PaymentIntent._on_success = on_success_saving_the_card

    def payment_intent_confirm(
        cls,
        id,
        payment_method=None,
        payment_method_data=None,
        client_secret=None,
        use_stripe_sdk=None,
        setup_future_usage=None,
        return_url=None,
        **kwargs,
    ):
        if kwargs:
            raise UserError(400, "Unexpected " + ", ".join(kwargs.keys()))
        try:
            assert isinstance(id, str) and id.startswith("pi_")
            assert client_secret is None or isinstance(client_secret, str)
            assert payment_method is None or isinstance(payment_method, str)
            assert payment_method_data is None or isinstance(payment_method_data, dict)
            assert setup_future_usage in (None, "", "off_session", "on_session")
        except AssertionError:
            raise UserError(400, "Bad request") from None
        obj = cls._api_retrieve(id)
        if client_secret is not None and client_secret != obj.client_secret:
            raise UserError(401, "Unauthorized")
        if obj.status not in ("requires_payment_method", "requires_confirmation"):
            raise UserError(
                400,
                f"This PaymentIntent's status is {obj.status}; it cannot be confirmed.",
                {"code": "payment_intent_unexpected_state"},
            )
        if payment_method_data is not None:
            method = PaymentMethod(**payment_method_data)
        elif payment_method is not None:
            method = PaymentMethod._api_retrieve(payment_method)
            if method.customer is not None and method.customer != obj.customer:
                raise UserError(400, f"The payment method {payment_method} belongs to another customer.")
        elif obj.payment_method is None:
            raise UserError(400, "You must provide a payment method.", {"code": "payment_intent_unexpected_state"})
        else:
            method = PaymentMethod._api_retrieve(obj.payment_method)
        obj.payment_method = method.id
        obj.latest_charge = None  # a new attempt after a failed one
        if setup_future_usage:
            obj.setup_future_usage = setup_future_usage
        obj._confirm(on_failure_now=obj._report_failure)
        return obj

    authenticate = PaymentIntent._api_authenticate

    def payment_intent_authenticate(cls, id, **kwargs):
        obj = authenticate(id, **kwargs)
        if obj._authentication_failed:
            schedule_webhook(resources.Event("payment_intent.payment_failed", obj))
        return obj

    setup_confirm = SetupIntent._api_confirm

    def setup_intent_confirm(cls, id, **kwargs):
        obj = setup_confirm(id, **kwargs)
        if obj.status == "succeeded" and obj.customer and obj.payment_method:
            PaymentMethod._api_retrieve(obj.payment_method).customer = obj.customer
        return obj

    PaymentIntent._api_confirm = classmethod(payment_intent_confirm)
    PaymentIntent._api_authenticate = classmethod(payment_intent_authenticate)
    SetupIntent._api_confirm = classmethod(setup_intent_confirm)
    # The server routes the extra endpoints to the functions listed here when it is imported.
    replaced = {
        "/v1/payment_intents/{id}/confirm": PaymentIntent._api_confirm,
        "/v1/payment_intents/{id}/_authenticate": PaymentIntent._api_authenticate,
        "/v1/setup_intents/{id}/confirm": SetupIntent._api_confirm,
    }
    resources.extra_apis[:] = [
        (method, url, replaced.get(url, func) if method == "POST" else func)
        for method, url, func in resources.extra_apis
    ]


# localstripe's Stripe.js with Stripe's confirmCardPayment (the fifth gap of the module docstring).
CONFIRM_CARD_PAYMENT_JS = """    confirmCardPayment: async (clientSecret, data) => {
      console.log('localstripe (patched): Stripe().confirmCardPayment()');
      try {
        const pi = clientSecret.match(/^(pi_\\w+)_secret_/)[1];
        const base = `${LOCALSTRIPE_BASE_API}/v1/payment_intents/${pi}`;
        const post = async (url, extra) => {
          const response = await fetch(url, {
            method: 'POST',
            body: JSON.stringify({key: apiKey, client_secret: clientSecret, ...extra}),
          });
          const body = await response.json().catch(() => ({}));
          if (response.status !== 200 || body.error) {
            return {error: body.error || {message: `HTTP ${response.status}`}};
          }
          return {intent: body};
        };
        data = data || {};
        const params = {use_stripe_sdk: true};
        if (typeof data.payment_method === 'string') {
          params.payment_method = data.payment_method;
        } else if (data.payment_method && data.payment_method.card instanceof Element) {
          const element = data.payment_method.card;
          if (!element.value) {
            return {error: {type: 'validation_error', code: 'incomplete_number',
                            message: 'Your card number is incomplete.'}};
          }
          const billing = Object.assign({}, data.payment_method.billing_details || {});
          billing.address = Object.assign({postal_code: element.value.postal_code}, billing.address || {});
          params.payment_method_data = {type: 'card', card: element.value.card, billing_details: billing};
        }
        if (data.setup_future_usage) {
          params.setup_future_usage = data.setup_future_usage;
        }
        let answer = await post(`${base}/confirm`, params);
        if (answer.error) {
          return {error: answer.error};
        }
        if (answer.intent.status === 'requires_action') {
          const success = await openModal(
            '3D Secure\\nDo you want to confirm or cancel?',
            'Complete authentication', 'Fail authentication');
          answer = await post(`${base}/_authenticate?success=${success}`, {});
          if (answer.error) {
            return {error: answer.error};
          }
        }
        const intent = answer.intent;
        if (['succeeded', 'processing', 'requires_capture'].includes(intent.status)) {
          return {paymentIntent: intent};
        }
        const failure = intent.last_payment_error || {};
        return {error: {type: 'card_error', code: failure.code, payment_intent: intent,
                        message: failure.message || `payment_intent has status ${intent.status}`}};
      } catch (err) {
        return {error: {message: String((err && err.message) || err)}};
      }
    },
"""


def _stripe_js() -> str:
    from localstripe import server

    with open(os.path.join(os.path.dirname(server.__file__), "localstripe-v3.js")) as f:
        script = f.read()
    start = script.index("    confirmCardPayment: async (clientSecret, data) => {")
    end = script.index("    handleCardPayment:", start)
    return script[:start] + CONFIRM_CARD_PAYMENT_JS + script[end:]


def _browser_auth_middleware():
    """localstripe's auth middleware, plus what the browser's Stripe.js needs: the patched
    script, and confirming a PaymentIntent with the publishable key and the intent's client
    secret (localstripe takes the publishable key for SetupIntents only)."""
    import re

    from aiohttp import web
    from localstripe import server

    script = _stripe_js()
    confirm = re.compile(r"^/v1/payment_intents/\w+/confirm$")

    @web.middleware
    async def auth(request, handler):
        if request.method == "GET" and request.path == "/js.stripe.com/v3/":
            return web.Response(text=script, content_type="application/javascript")
        if request.method == "POST" and confirm.match(request.path) and not request.headers.get("Authorization"):
            data = await server.get_post_data(request, remove_auth=False) or {}
            key, secret = data.get("key"), data.get("client_secret")
            if isinstance(key, str) and key.startswith("pk_") and isinstance(secret, str) and secret:
                return await handler(request)  # the confirm itself checks the secret
        return await server.auth_middleware(request, handler)

    return auth


def _idempotency_middleware():
    from aiohttp import web
    from localstripe import webhooks

    replies: dict[tuple[str, str], tuple[tuple[str, bytes], int, bytes]] = {}
    running: set[tuple[str, str]] = set()

    def error(status: int, kind: str, message: str) -> web.Response:
        body = {"error": {"type": kind, "message": message}}
        return web.json_response(body, status=status)

    @web.middleware
    async def idempotency(request, handler):
        if request.method == "DELETE" and request.path == "/_config/data":
            replies.clear()
            webhooks._webhooks.clear()
            return await handler(request)
        key = request.headers.get("Idempotency-Key")
        if request.method != "POST" or not key or request.path.startswith("/_config/"):
            return await handler(request)
        slot = (request.headers.get("Authorization", ""), key)
        fingerprint = (request.path, await request.read())
        if slot in running:
            return error(409, "idempotency_error", "A request with this idempotency key is still running.")
        if slot in replies:
            first, status, body = replies[slot]
            if first != fingerprint:
                return error(
                    400,
                    "idempotency_error",
                    "Keys for idempotent requests can only be used with the same parameters they were first used "
                    f"with. Try using a key other than '{key}' if you meant to execute a different request.",
                )
            return web.Response(
                status=status,
                body=body,
                content_type="application/json",
                headers={"Idempotent-Replayed": "true"},
            )
        running.add(slot)
        try:
            response = await handler(request)
        finally:
            running.discard(slot)
        if response.status < 500 and isinstance(response.body, bytes):
            replies[slot] = (fingerprint, response.status, response.body)
        return response

    return idempotency


def _exit_when_stdin_closes() -> None:
    import signal

    sys.stdin.buffer.read()
    os.kill(os.getpid(), signal.SIGTERM)  # run_app turns it into a clean shutdown


def _serve() -> None:
    import socket
    import threading

    from aiohttp import web

    _patch_localstripe()
    from localstripe import server

    server.app.middlewares.insert(0, _idempotency_middleware())
    auth = server.app.middlewares.index(server.auth_middleware)
    server.app.middlewares[auth] = _browser_auth_middleware()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    threading.Thread(target=_exit_when_stdin_closes, daemon=True).start()
    web.run_app(server.app, sock=sock, print=None, access_log=None, shutdown_timeout=1)


if __name__ == "__main__":
    _serve()
