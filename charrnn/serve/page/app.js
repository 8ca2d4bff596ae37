// The page of `charrnn serve`: plain JavaScript, no build step, nothing from outside.
// Generate streams server-sent events over a POST (fetch + ReadableStream); Surprise colours
// a text by the model's loss at each character, as `charrnn explain --html` does.
"use strict";

const $ = (id) => document.getElementById(id);
let running = null; // the AbortController of the generation in progress

for (const id of ["temperature", "top-p", "length"]) {
  const show = () => { $(id + "-value").textContent = $(id).value; };
  $(id).addEventListener("input", show);
  show();
}

async function describe() {
  try {
    const health = await (await fetch("/health")).json();
    const length = $("length");
    length.max = health.limits.max_length;
    if (Number(length.value) > health.limits.max_length) length.value = health.limits.max_length;
    $("length-value").textContent = length.value;
    const model = await fetch("/v1/model");
    if (model.ok) {
      const m = await model.json();
      $("model").textContent = `${m.run}: ${m.cell} ${m.num_layers}x${m.hidden_size}, ` +
        `${m.vocab_size} characters, trained on ${m.corpus} (${health.device})`;
    }
  } catch (error) { /* the page still works without the description */ }
}

function setStatus(id, text, isError) {
  $(id).textContent = text;
  $(id).classList.toggle("error", Boolean(isError));
}

// Parse a server-sent event block ("event: x\ndata: {...}") into [event, data].
function parseEvent(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  return [event, data.length ? JSON.parse(data.join("\n")) : null];
}

async function generate() {
  if (running) running.abort();
  const controller = new AbortController();
  running = controller;
  const body = {
    prime: $("prime").value,
    temperature: Number($("temperature").value),
    top_p: Number($("top-p").value),
    length: Number($("length").value),
    stream: true,
    // As the Surprise button: a character the model never saw (a pasted curly quote) is
    // left out of the prime rather than refused, since the page has no other way to say so.
    skip_unknown: true,
  };
  if ($("seed").value !== "") body.seed = Number($("seed").value);
  const output = $("output");
  output.textContent = "";
  output.dataset.state = "running";
  $("stop").disabled = false;
  setStatus("status", "writing...");
  const newText = document.createTextNode("");
  try {
    const response = await fetch("/v1/generate", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!response.ok) {
      const problem = await response.json().catch(() => ({}));
      throw new Error(problem.error || `HTTP ${response.status}`);
    }
    const prime = document.createElement("span");
    prime.className = "prime";
    output.append(prime, newText);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const [event, data] = parseEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (event === "message") {
          newText.appendData(data.text);
        } else if (event === "done") {
          prime.textContent = data.text.slice(0, data.text.length - data.new_characters[0]);
          output.dataset.state = "done";
          const rate = data.chars_per_second ? `, ${Math.round(data.chars_per_second)} chars/s` : "";
          setStatus("status", `${data.new_characters[0]} characters (${data.finish_reasons[0]})` +
            `${rate}; seed ${data.seed}`);
        } else if (event === "error") {
          throw new Error(data.error);
        }
      }
    }
    if (output.dataset.state !== "done") throw new Error("the stream ended early");
  } catch (error) {
    output.dataset.state = "error";
    if (error.name !== "AbortError") setStatus("status", String(error.message || error), true);
    else setStatus("status", "stopped");
  } finally {
    if (running === controller) running = null;
    $("stop").disabled = true;
  }
}

// White at the scale's low end to red at its high end (explain.Scale, not diverging).
function colour(value, low, high) {
  let share = high > low ? (value - low) / (high - low) : 0.5;
  share = Math.min(Math.max(share, 0), 1);
  const [r, g, b] = [214, 39, 40].map((c) => Math.round(255 + (c - 255) * share));
  return `rgb(${r}, ${g}, ${b})`;
}

async function score() {
  const view = $("score-view");
  view.textContent = "";
  setStatus("score-status", "reading...");
  try {
    const response = await fetch("/v1/score", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text: $("score-text").value, skip_unknown: true }),
    });
    const data = await response.json();
    if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
    const { low, high } = data.scale;
    $("key-low").textContent = low.toFixed(2);
    $("key-high").textContent = high.toFixed(2);
    data.chars.forEach((char, i) => {
      const span = document.createElement("span");
      span.textContent = char === "\n" ? "\u21b5\n" : char;
      span.title = data.notes[i];
      const value = data.values[i];
      if (value !== null) {
        span.style.background = colour(value, low, high);
        span.dataset.value = value;
      }
      view.append(span);
    });
    setStatus("score-status", data.mean === null ? "nothing scored" :
      `mean surprise ${data.mean.toFixed(3)} nats per character`);
  } catch (error) {
    setStatus("score-status", String(error.message || error), true);
  }
}

$("generate").addEventListener("click", generate);
$("stop").addEventListener("click", () => running && running.abort());
$("score").addEventListener("click", score);
describe();
