// EcoSnap's page: calls the JSON API (the same one any client uses) and draws answers.
"use strict";

const LABELS = JSON.parse(document.getElementById("labels").textContent);
const $ = (selector) => document.querySelector(selector);
let language = LABELS.default_language;
let lastResult = null;

// Keys stay in this tab only (sessionStorage), never in the page's address.
for (const id of ["api-key", "admin-key"]) {
  const input = document.getElementById(id);
  input.value = sessionStorage.getItem(id) || "";
  input.addEventListener("change", () => sessionStorage.setItem(id, input.value));
}

function headers(keyId = "api-key") {
  const key = document.getElementById(keyId).value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// Every error the API gives is {"error": {"code", "message"}}; show its message.
async function call(path, options = {}, keyId = "api-key") {
  const response = await fetch(path, { ...options, headers: { ...headers(keyId), ...options.headers } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(body.error ? body.error.message : `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return { status: response.status, body };
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// A job's record once it has finished, calling back with each record seen on the way.
async function finished(jobId, onRecord = () => {}) {
  for (;;) {
    const { body } = await call(`/jobs/${jobId}`);
    onRecord(body);
    if (body.status === "succeeded") return body;
    if (body.status === "failed" || body.status === "cancelled") {
      throw new Error(body.error ? body.error.message : body.status);
    }
    await pause(500);
  }
}

function text(id, value) {
  document.getElementById(id).textContent = value;
}

function className(label) {
  return language === "en" ? `${LABELS.english[label]} (${label})` : label;
}

function setLanguage(chosen) {
  language = chosen;
  document.documentElement.lang = chosen;
  for (const element of document.querySelectorAll("[data-id]")) {
    element.textContent = element.dataset[chosen];
  }
  for (const button of document.querySelectorAll(".language")) {
    button.setAttribute("aria-pressed", String(button.dataset.language === chosen));
  }
  if (lastResult) showResult(lastResult);
}

function showResult(result) {
  lastResult = result;
  text("label", className(result.label));
  text("confidence", `${result.confidence}% · ${result.model_version}`);
  text("suggestion", LABELS.suggestions[language][result.label]);
  const bars = $("#bars");
  bars.replaceChildren();
  const ranked = Object.entries(result.probabilities).sort((a, b) => b[1] - a[1]);
  for (const [label, probability] of ranked) {
    const item = document.createElement("li");
    const percent = (100 * probability).toFixed(1);
    item.dataset.label = label;
    item.innerHTML = '<span class="name"></span><span class="track"><span class="fill"></span></span><span class="value"></span>';
    item.querySelector(".name").textContent = className(label);
    item.querySelector(".fill").style.width = `${percent}%`;
    item.querySelector(".value").textContent = `${percent}%`;
    bars.append(item);
  }
  $("#result").hidden = false;
}

async function classify(file) {
  lastResult = null;
  $("#result").hidden = true;
  $("#preview").src = URL.createObjectURL(file);
  text("photo-status", language === "en" ? "Classifying…" : "Mengenali…");
  const form = new FormData();
  form.append("file", file);
  try {
    const { status, body } = await call(`/predict?wait=${LABELS.wait_s}&lang=${language}`, { method: "POST", body: form });
    showResult(status === 200 ? body : (await finished(body.job_id)).result);
    text("photo-status", "");
  } catch (error) {
    text("photo-status", error.message);
  }
}

for (const id of ["camera", "chooser"]) {
  const input = document.getElementById(id);
  input.addEventListener("change", () => input.files[0] && classify(input.files[0]));
}

function row(table, cells, header = false) {
  const tr = document.createElement("tr");
  for (const value of cells) {
    const cell = document.createElement(header ? "th" : "td");
    cell.textContent = value;
    tr.append(cell);
  }
  table.append(tr);
  return tr;
}

function showReport(result) {
  const summary = $("#summary tbody");
  summary.replaceChildren();
  row(summary, ["Accuracy", `${result.accuracy}%`]);
  for (const name of ["precision", "recall", "f1_score"]) {
    row(summary, [`${name} (macro / weighted)`, `${result[name]}% / ${result.weighted[name]}%`]);
  }
  const { labels, matrix } = result.confusion_matrix;  // in the model's class order
  const perClass = $("#per-class tbody");
  perClass.replaceChildren();
  for (const label of labels) {
    const scores = result.per_class[label];
    row(perClass, [className(label), scores.precision, scores.recall, scores.f1_score, scores.support]);
  }
  const most = Math.max(1, ...matrix.flat());
  $("#confusion thead").replaceChildren();
  row($("#confusion thead"), ["", ...labels], true);
  const body = $("#confusion tbody");
  body.replaceChildren();
  matrix.forEach((counts, index) => {
    const tr = row(body, [labels[index], ...counts]);
    [...tr.children].slice(1).forEach((cell, column) => {
      cell.style.setProperty("--share", counts[column] / most);
      cell.classList.add(column === index ? "hit" : "miss");
    });
  });
  $("#report").hidden = false;
}

function showProgress(record) {
  const progress = record.progress;
  if (!progress) {
    text("evaluate-status", record.status);
    return;
  }
  $("#progress").value = progress.percent;
  const left = progress.eta_s === null ? "" : ` · ${progress.eta_s} s`;
  text("evaluate-status", `${progress.done}/${progress.total} · ${progress.percent}% · ${progress.images_per_s} img/s${left}`);
}

$("#evaluate-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData();
  form.append("file", $("#dataset").files[0]);
  if ($("#split").value.trim()) form.append("split", $("#split").value.trim());
  $("#report").hidden = true;
  $("#progress").hidden = false;
  $("#progress").value = 0;
  try {
    const { body } = await call("/evaluate", { method: "POST", body: form });
    const record = await finished(body.job_id, showProgress);
    showProgress(record);
    showReport(record.result);
  } catch (error) {
    text("evaluate-status", error.message);
  }
});

async function showModels() {
  try {
    const { body } = await call("/model-info");
    text("model-info", `${body.version} · ${body.model} · ${body.description}`);
  } catch (error) {
    text("model-info", error.message);
  }
  const table = $("#versions");
  try {
    const { body } = await call("/models", {}, "admin-key");
    const rows = table.querySelector("tbody");
    rows.replaceChildren();
    for (const version of body.versions) {
      const state = version.active ? `${version.state} · active` : version.state;
      row(rows, [version.version, state, version.description]).classList.toggle("active", version.active);
    }
    table.hidden = false;
    text("models-status", "");
  } catch (error) {
    table.hidden = true;
    text("models-status", error.message);
  }
}

for (const button of document.querySelectorAll(".tab")) {
  button.addEventListener("click", () => {
    for (const other of document.querySelectorAll(".tab")) {
      other.setAttribute("aria-pressed", String(other === button));
      document.getElementById(`${other.dataset.view}-view`).hidden = other !== button;
    }
    if (button.dataset.view === "operator") showModels();
  });
}
for (const button of document.querySelectorAll(".language")) {
  button.addEventListener("click", () => setLanguage(button.dataset.language));
}
$("#admin-key").addEventListener("change", showModels);
setLanguage(language);
