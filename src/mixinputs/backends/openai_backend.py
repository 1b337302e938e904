"""A running mixinputs-enabled vLLM server (OpenAI-compatible API) as a backend.

One machine, many behind a load balancer, or vLLM's own data-parallel serving: every request is
a ``/v1/completions`` call with MoI in ``vllm_xargs`` (standard decoding sends
``mixinputs_mode: off``), at most ``concurrency`` in flight. Requests go through the ``openai``
SDK's client, whose retries this backend uses rather than a loop of its own: connection errors,
timeouts, 408, 409, 429 and 5xx are retried ``max_retries`` times with exponential backoff and
jitter, waiting what a ``Retry-After`` (or ``retry-after-ms``) header asks where the server sends
one; any other 4xx is an answer (a bad MoI setting is the server's 400) and is not retried.

A vLLM server without the plugin silently ignores ``vllm_xargs`` keys, which would make every
"MoI" sample a standard one. So the backend first sends a probe with a deliberately invalid
``mixinputs_beta``: a mixinputs-enabled server answers 400 naming the key; anything else is an
error that says so.

Chat templates are the server's: ``/tokenize`` renders the user message, the tokens are sent as
the prompt (nothing is tokenized twice), ``/detokenize`` gives the text saved with the record.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed

from mixinputs.backends import Completion, Request, SamplingSettings
from mixinputs.config import KEY_BETA, STANDARD_REQUEST

logger = logging.getLogger(__name__)


class ServerError(RuntimeError):
    """The server refused a request, could not be reached, or is not mixinputs-enabled."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status  # the HTTP status of a refusal; None when there was no answer


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        concurrency: int = 16,
        max_retries: int = 5,
        timeout_s: float = 3600.0,
        check_server: bool = True,
    ):
        try:
            import openai
        except ModuleNotFoundError as e:
            if e.name != "openai":
                raise
            from mixinputs.environment_checks import EnvironmentProblem

            raise EnvironmentProblem(
                "--backend openai needs the openai client: `pip install 'mixinputs[eval]'`"
            ) from None
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.base_url = base_url.rstrip("/")
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[: -len("/v1")]
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.client = openai.OpenAI(
            base_url=f"{self.base_url}/v1",
            api_key=api_key or "EMPTY",  # a vLLM server without --api-key ignores it
            max_retries=max_retries,
            timeout=openai.Timeout(timeout_s, connect=30.0),
        )
        self.model = model or self._served_model()
        self._tokens: dict[str, list[int]] = {}  # chat prompt text -> its tokens
        self._lock = threading.Lock()
        if check_server:
            self.check_mixinputs()

    # -- requests ----------------------------------------------------------------------------
    def _post(self, path: str, body: dict) -> dict:
        """POST ``body`` to ``path`` (from the server's root), retried by the SDK; an answer
        other than success, or no answer after the retries, is a :class:`ServerError`."""
        import openai

        url = f"{self.base_url}{path}"
        try:
            return self.client.post(url, cast_to=object, body=body)
        except openai.APIStatusError as e:
            raise ServerError(
                f"{url} answered {e.status_code}: {e.response.text[:2000]}", e.status_code
            ) from None
        except openai.APIConnectionError as e:  # connection errors and timeouts, after retries
            cause = e.__cause__ or e
            raise ServerError(
                f"{url} failed {self.max_retries + 1} times, last: {type(cause).__name__}: {cause}"
            ) from None

    def _served_model(self) -> str:
        import openai

        try:
            return self.client.models.list().data[0].id
        except (openai.OpenAIError, IndexError, ValueError) as e:
            raise ServerError(
                f"cannot list the models served at {self.base_url}/v1/models ({e}): "
                "is it a running vLLM server? pass --model to name the model"
            ) from None

    def check_mixinputs(self) -> None:
        """Raise :class:`ServerError` unless the server validates ``mixinputs_*`` request keys
        (a server without the plugin would silently ignore them)."""
        body = {
            "model": self.model,
            "prompt": "Hi",
            "max_tokens": 1,
            "vllm_xargs": {KEY_BETA: -1},  # invalid on purpose
        }
        try:
            self._post("/v1/completions", body)
        except ServerError as e:
            if e.status == 400 and KEY_BETA in str(e):
                return
            raise ServerError(
                f"{self.base_url} did not reject an invalid {KEY_BETA} the way a "
                f"mixinputs-enabled vLLM does ({e}); is mixinputs installed where the server runs?"
            ) from None
        raise ServerError(
            f"{self.base_url} is not a mixinputs-enabled vLLM: it accepted {KEY_BETA}=-1, so it "
            "ignores MoI settings. Install mixinputs in the server's environment (and leave "
            "VLLM_PLUGINS unset or include 'mixinputs'), then restart it."
        )

    # -- the Backend interface -------------------------------------------------------------------
    def chat_prompt(self, user_message: str) -> str:
        messages = [{"role": "user", "content": user_message}]
        tokens = self._post(
            "/tokenize",
            {"model": self.model, "messages": messages, "add_generation_prompt": True},
        )["tokens"]
        text = self._post("/detokenize", {"model": self.model, "tokens": tokens})["prompt"]
        with self._lock:
            self._tokens[text] = tokens
        return text

    def body(self, prompt: str, settings: SamplingSettings) -> dict:
        """The ``/v1/completions`` request for one prompt."""
        xargs = settings.moi.to_request() if settings.moi is not None else dict(STANDARD_REQUEST)
        body = {
            "model": self.model,
            "prompt": self._tokens.get(prompt, prompt),
            "max_tokens": settings.max_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "vllm_xargs": xargs,
            **settings.extra,
        }
        if settings.top_k > 0:
            body["top_k"] = settings.top_k
        if settings.min_tokens:
            body["min_tokens"] = settings.min_tokens
        if settings.seed is not None:
            body["seed"] = settings.seed
        return body

    def _complete(self, prompt: str, settings: SamplingSettings) -> Completion:
        answer = self._post("/v1/completions", self.body(prompt, settings))
        usage = answer.get("usage") or {}
        return Completion(answer["choices"][0]["text"], int(usage.get("completion_tokens", 0)))

    def generate(self, prompts: list[str], settings: SamplingSettings) -> list[Completion]:
        out: list[Completion | None] = [None] * len(prompts)
        for index, completion in self.generate_stream([(p, settings) for p in prompts]):
            out[index] = completion
        return out  # type: ignore[return-value]

    def generate_stream(self, requests: list[Request]) -> Iterator[tuple[int, Completion]]:
        """``concurrency`` requests in flight, each yielded as it returns; closing the iterator
        early cancels what has not started."""
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="mixinputs")
        try:
            futures = {
                pool.submit(self._complete, prompt, settings): index
                for index, (prompt, settings) in enumerate(requests)
            }
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
