// Boxes that scroll sideways (display equations, tables, wide outputs) get a class for each side
// where part of their content is hidden, and minippo.css fades that edge: the cue that there is
// more. Marked once the page, its fonts and MathJax are ready, and again on scroll and resize.
(function () {
  "use strict";
  const SCROLLERS = [
    "div.math mjx-container[display='true']",
    ".pst-scrollable-table-container",
    ".table-wrapper",
    "div.cell_output .output.text_html",
  ].join(", ");

  function mark(box) {
    const hidden = box.scrollWidth - box.clientWidth;
    box.classList.toggle("minippo-scrolls", hidden > 1);
    box.classList.toggle("minippo-more-left", hidden > 1 && box.scrollLeft > 1);
    box.classList.toggle("minippo-more-right", hidden > 1 && hidden - box.scrollLeft > 1);
  }

  function markAll() {
    for (const box of document.querySelectorAll(SCROLLERS)) {
      if (!box.dataset.minippoWatched) {
        box.dataset.minippoWatched = "1";
        box.addEventListener("scroll", () => mark(box), { passive: true });
      }
      mark(box);
    }
  }

  window.minippoMarkScrollers = markAll;
  document.addEventListener("DOMContentLoaded", markAll);
  window.addEventListener("resize", markAll);
  window.addEventListener("load", () => {
    markAll();
    if (document.fonts) document.fonts.ready.then(markAll);
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) MathJax.startup.promise.then(markAll);
  });
})();
