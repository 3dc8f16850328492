// The API reference at /docs: the vendored Swagger UI over this server's
// own /openapi.json. No validator (it would call another origin) and no
// "try it out" credentials kept beyond the tab.
"use strict";
window.addEventListener("DOMContentLoaded", function () {
  window.ui = window.SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    persistAuthorization: false,
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
