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

// Greedy decoding draws nothing: the settings that shape a draw (and its seed) do not apply,
// and every sample would be the same text. Also run at load: a browser may restore the box.
const DRAW_SETTINGS = ["temperature", "top-p", "top-k", "seed", "samples"];
function greedyChanged() {
  for (const id of DRAW_SETTINGS) $(id).disabled = $("greedy").checked;
}
$("greedy").addEventListener("change", greedyChanged);
greedyChanged();

async function describe() {
  try {
    const health = await (await fetch("/health")).json();
    const length = $("length");
    length.max = health.limits.max_length;
    if (Number(length.value) > health.limits.max_length) length.value = health.limits.max_length;
    $("length-value").textContent = length.value;
    $("samples").max = Math.min(health.limits.max_samples, health.limits.max_streams);
    const model = await fetch("/v1/model");
    if (model.ok) {
      const m = await model.json();
      $("top-k").max = m.vocab_size;
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

// "\n" typed in the stop box is a new line, "\t" a tab, "\\" a backslash.
function fromTyped(typed) {
  return typed.replace(/\\([nt\\])/g, (_, c) => ({ n: "\n", t: "\t", "\\": "\\" })[c]);
}

function request() {
  const body = {
    prime: $("prime").value,
    length: Number($("length").value),
    stream: true,
    // As the Surprise button: a character the model never saw (a pasted curly quote) is
    // left out of the prime rather than refused, since the page has no other way to say so.
    skip_unknown: true,
    score: true, // how likely the model finds each sample: shown beside it
  };
  if ($("greedy").checked) {
    body.greedy = true;
  } else {
    body.temperature = Number($("temperature").value);
    body.top_p = Number($("top-p").value);
    if (Number($("top-k").value) > 0) body.top_k = Number($("top-k").value);
    if ($("seed").value !== "") body.seed = Number($("seed").value);
  }
  if (!body.greedy && Number($("samples").value) > 1) body.num_samples = Number($("samples").value);
  if ($("stop-at").value !== "") body.stop = [fromTyped($("stop-at").value)];
  return body;
}

// One block a sample: the prime (grey) and the new text, which grows as it streams in; with
// several, a caption above each says how likely the model finds it once it is done.
function showSamples(prime, count) {
  const texts = [];
  const blocks = [];
  for (let i = 0; i < count; i++) {
    const block = document.createElement("pre");
    block.className = "sample";
    const shown = document.createElement("span");
    shown.className = "prime";
    shown.textContent = prime;
    const text = document.createTextNode("");
    block.append(shown, text);
    if (count > 1) {
      const caption = document.createElement("p");
      caption.className = "caption";
      caption.textContent = `sample ${i + 1}`;
      blocks.push(caption);
    }
    blocks.push(block);
    texts.push(text);
  }
  $("output").replaceChildren(...blocks);
  return texts;
}

// "mean log-prob -1.234 per character": the model's own score of a sample's new text.
const likelihood = (mean) => (mean === null ? "no new text" :
  `mean log-prob ${mean.toFixed(3)} per character`);

async function generate() {
  if (running) running.abort();
  const controller = new AbortController();
  running = controller;
  const body = request();
  const output = $("output");
  output.replaceChildren();
  output.dataset.state = "running";
  $("stop").disabled = false;
  setStatus("status", "writing...");
  let texts = [];
  let seed = null; // known from the start event: kept when the stream is stopped
  const seedWords = () => (body.greedy ? "greedy" : `seed ${seed}`);
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
        if (event === "start") {
          seed = data.seed;
          texts = showSamples(data.prime, data.settings.num_samples);
          setStatus("status", `writing... (${seedWords()})`);
        } else if (event === "message") {
          texts[data.index || 0].appendData(data.text);
        } else if (event === "done") {
          output.dataset.state = "done";
          const rate = data.chars_per_second ? `, ${Math.round(data.chars_per_second)} chars/s` : "";
          const each = data.new_characters.map((n, i) => `${n} (${data.finish_reasons[i]})`);
          const what = each.length > 1 ? `${each.length} samples of ${each.join(", ")}` : each[0];
          const means = data.mean_log_probs;
          if (each.length > 1) {
            output.querySelectorAll(".caption").forEach((caption, i) => {
              caption.textContent = `sample ${i + 1}: ${likelihood(means[i])}`;
            });
          }
          const scored = each.length === 1 ? `, ${likelihood(means[0])}` : "";
          setStatus("status", `${what} characters${scored}${rate}; ${seedWords()}`);
        } else if (event === "error") {
          throw new Error(data.error);
        }
      }
    }
    if (output.dataset.state !== "done") throw new Error("the stream ended early");
  } catch (error) {
    if (running !== controller) return; // replaced by a newer run: the page is that one's now
    output.dataset.state = "error";
    if (error.name !== "AbortError") setStatus("status", String(error.message || error), true);
    else setStatus("status", seed === null ? "stopped" : `stopped; ${seedWords()}`);
  } finally {
    if (running === controller) {
      running = null;
      $("stop").disabled = true;
    }
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
