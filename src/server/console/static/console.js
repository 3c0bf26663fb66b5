// The console's only script: fills the import form's text from a chosen CSV file, and makes "Back" links go
// back. Everything else works without it.
document.addEventListener("DOMContentLoaded", () => {
  for (const input of document.querySelectorAll("input[type=file][data-fills]")) {
    input.addEventListener("change", () => {
      const file = input.files && input.files[0];
      const target = document.getElementById(input.dataset.fills);
      if (!file || !target) return;
      file.text().then((text) => { target.value = text; });
    });
  }
  for (const a of document.querySelectorAll("a[data-back]")) {
    a.setAttribute("href", "#");
    a.addEventListener("click", (e) => { e.preventDefault(); history.back(); });
  }
});
