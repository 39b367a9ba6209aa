// Kriten console: the buttons and forms, and a running job's output followed live.
//
// Every change is a request to the API itself (/api/v1/...), as JSON, with the session
// cookie: the API's own authorization, cross-site checks (same origin, JSON only) and
// audit log apply, exactly as for any other client. Answers are put on the page as text
// (textContent), never as markup. Loaded as a file: the pages run no inline script.
"use strict";

(() => {
  const UI = "/ui";

  // --- talking to the API ---

  async function callApi(method, url, body) {
    const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = body;
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (problem) {
      return { ok: false, status: 0, answer: { error: "the server cannot be reached" } };
    }
    const text = await response.text();
    let answer = null;
    try {
      answer = text ? JSON.parse(text) : null;
    } catch (problem) {
      answer = { error: text.slice(0, 500) };
    }
    return { ok: response.ok, status: response.status, answer };
  }

  function problemOf(result) {
    const said = result.answer && typeof result.answer.error === "string" ? result.answer.error : "";
    if (result.status === 401) return "Your session has ended: log in again.";
    if (result.status === 403) return said ? `Not allowed: ${said}` : "Not allowed.";
    return said || `The API answered ${result.status}.`;
  }

  // --- the answer area of a page ---

  function resultArea(near) {
    const scope = near.closest("main") || document;
    return scope.querySelector("[data-result]");
  }

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  function jobLink(jobId) {
    const link = element("a", jobId, "mono");
    link.href = `${UI}/jobs/${encodeURIComponent(jobId)}`;
    link.dataset.testid = "new-job";
    return link;
  }

  function show(area, ok, ...lines) {
    if (!area) return;
    area.replaceChildren(...lines);
    area.className = `result ${ok ? "ok" : "error"}`;
  }

  function line(...parts) {
    const p = element("p");
    for (const part of parts) p.append(typeof part === "string" ? document.createTextNode(part) : part);
    return p;
  }

  function secretLines(secret, warnings) {
    const value = element("span", secret, "secret");
    value.dataset.testid = "secret";
    const copy = element("button", "Copy", "secondary");
    copy.type = "button";
    copy.addEventListener("click", () => copyText(secret, copy));
    const lines = [
      line("The secret, shown this once: copy it to the sender now. "),
      line(value, " ", copy),
    ];
    for (const warning of warnings || []) lines.push(line(`Warning: ${warning}`));
    return lines;
  }

  async function copyText(text, button) {
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied";
    } catch (problem) {
      button.textContent = "Select and copy";
    }
    setTimeout(() => { button.textContent = "Copy"; }, 2000);
  }

  function refresh(selector) {
    const target = selector && document.querySelector(selector);
    if (target && window.htmx) window.htmx.trigger(target, "refresh");
  }

  // --- forms: fields to JSON, by each input's data-type ---

  function formValue(form) {
    const whole = form.querySelector('[data-type="whole"]');
    if (whole) return whole.value;
    const value = {};
    for (const input of form.querySelectorAll("[data-type]")) {
      const type = input.dataset.type;
      const raw = input.value;
      if (type === "boolean") {
        value[input.name] = input.checked;
        continue;
      }
      if (raw.trim() === "") {
        if (input.required) value[input.name] = "";
        continue;
      }
      if (type === "integer" || type === "number") {
        const number = Number(raw);
        value[input.name] = Number.isFinite(number) ? number : raw;
      } else if (type === "enum" || type === "json") {
        try {
          value[input.name] = JSON.parse(raw);
        } catch (problem) {
          throw new Error(`${input.name}: not valid JSON`);
        }
      } else if (type === "lines") {
        value[input.name] = raw.split("\n").map((s) => s.trim()).filter(Boolean);
      } else {
        value[input.name] = raw;
      }
    }
    return JSON.stringify(value);
  }

  // --- what each action does ---

  const actions = {
    async login(form) {
      const fields = new FormData(form);
      const body = JSON.stringify({
        username: fields.get("username"),
        password: fields.get("password"),
        provider: fields.get("provider"),
      });
      const result = await callApi("POST", "/api/v1/login", body);
      if (result.ok) {
        window.location.assign(form.dataset.next);
        return;
      }
      const message = result.status === 401 ? "Wrong username or password." : problemOf(result);
      show(resultArea(form), false, line(message));
    },

    async logout() {
      await callApi("POST", "/api/v1/logout");
      window.location.assign(`${UI}/login`);
    },

    async cancel(button) {
      if (!window.confirm("Cancel this job?")) return;
      const result = await callApi("DELETE", button.dataset.url);
      show(resultArea(button), result.ok, line(result.ok ? "Cancellation requested." : problemOf(result)));
    },

    async rerun(button) {
      const result = await callApi("POST", button.dataset.url, button.dataset.input);
      if (result.ok) {
        show(resultArea(button), true, line("Started again as ", jobLink(result.answer.id), "."));
      } else {
        show(resultArea(button), false, line(problemOf(result)));
      }
    },

    async "send-test"(button) {
      const result = await callApi("POST", button.dataset.url);
      const area = resultArea(button);
      if (result.ok && result.answer && result.answer.id) {
        show(area, true, line(`Test delivery ${result.answer.status || "accepted"} (${result.status}): job `, jobLink(result.answer.id)));
      } else {
        // The run endpoint's own refusal (a filter, a rate limit, ...): the delivery log says why.
        show(area, false, line(`The run endpoint answered ${result.status}: ${problemOf(result)}`));
      }
      refresh(button.dataset.refresh);
    },

    async redeliver(button) {
      const result = await callApi("POST", button.dataset.url);
      if (result.ok) {
        show(resultArea(button), true, line("Redelivered as a new job: ", jobLink(result.answer.id)));
      } else {
        show(resultArea(button), false, line(problemOf(result)));
      }
    },

    async rotate(button) {
      if (!window.confirm("Rotate the secret? The current one keeps verifying for a day.")) return;
      const result = await callApi("POST", button.dataset.url);
      if (result.ok) {
        show(resultArea(button), true, ...secretLines(result.answer.secret, result.answer.warnings));
      } else {
        show(resultArea(button), false, line(problemOf(result)));
      }
    },

    async "create-webhook"(form) {
      const result = await callApi("POST", form.dataset.url, formValue(form));
      const area = resultArea(form);
      if (!result.ok) {
        show(area, false, line(problemOf(result)));
        return;
      }
      const hook = result.answer;
      const open = element("a", "Open the webhook");
      open.href = `${UI}/webhooks/${encodeURIComponent(hook.id)}`;
      open.dataset.testid = "open-webhook";
      form.hidden = true;
      show(area, true, line("Webhook created. URL for the sender: ", element("code", hook.url)),
        ...secretLines(hook.secret, hook.warnings), line(open));
    },

    async "run-task"(form) {
      let body;
      try {
        body = formValue(form);
      } catch (problem) {
        show(resultArea(form), false, line(problem.message));
        return;
      }
      const result = await callApi("POST", form.dataset.url, body);
      if (result.ok) {
        window.location.assign(`${UI}/jobs/${encodeURIComponent(result.answer.id)}`);
      } else {
        show(resultArea(form), false, line(problemOf(result)));
      }
    },

    async copy(button) {
      const source = document.getElementById(button.dataset.target);
      if (source) {
        source.select();
        await copyText(source.value, button);
      }
    },
  };

  async function run(name, node) {
    const busy = node.tagName === "FORM" ? node.querySelector('[type="submit"]') : node;
    if (busy) busy.disabled = true;
    try {
      await actions[name](node);
    } finally {
      if (busy) busy.disabled = false;
    }
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button && actions[button.dataset.action]) {
      event.preventDefault();
      run(button.dataset.action, button);
    }
  });

  document.addEventListener("submit", (event) => {
    const form = event.target.closest("form[data-action]");
    if (form && actions[form.dataset.action]) {
      event.preventDefault();
      run(form.dataset.action, form);
    }
  });

  // --- a running job's output, followed from the API's log stream ---

  async function follow(output) {
    output.classList.add("following");
    try {
      const response = await fetch(output.dataset.follow, { credentials: "same-origin" });
      if (!response.ok || !response.body) return;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let text = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        text += value;
        // Stay at the bottom only if the reader was there: scrolling up to read stays put.
        const atBottom = output.scrollHeight - output.scrollTop - output.clientHeight < 40;
        output.textContent = text;
        if (atBottom) output.scrollTop = output.scrollHeight;
      }
      output.dataset.followed = "done";
    } finally {
      output.classList.remove("following");
    }
  }

  function start() {
    for (const output of document.querySelectorAll("pre[data-follow]")) follow(output);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
