// The last module of every page: module scripts run in document order once the page is parsed,
// so when this runs the page's own module has attached its handlers. Until then the submit
// buttons of script-driven forms take no clicks (app.css), so a click that comes early does not
// submit the form natively (a page reload that loses what was typed).
document.documentElement.dataset.ready = "1";
