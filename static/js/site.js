// Behaviour every page may use, kept out of inline handlers (the CSP allows no inline script).
// <form data-confirm="Question?">: ask before submitting. <button data-print>: print the page.
"use strict";
document.addEventListener("submit", function (event) {
  const question = event.target.getAttribute("data-confirm");
  if (question && !window.confirm(question)) event.preventDefault();
});
document.addEventListener("click", function (event) {
  if (event.target.closest("[data-print]")) window.print();
});
