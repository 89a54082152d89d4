"""The Content-Security-Policy every answer carries: scripts only from our own origin (no inline
script, no CDN), so a script that slipped into a page, or into model output shown on one, does
not run. Styles may be inline (the templates use style attributes); images are our own and data:
URIs, plus any https: image on pages that allow remote images (a project setting, see the
ranking page), since an image from anywhere else is a beacon to whoever serves it."""

from __future__ import annotations

POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src {img}; "
          "font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; "
          "form-action 'self'; frame-ancestors 'none'")


def allow_remote_images(response) -> None:
    """Let this page load https: images (the ranking page of a project that allows them)."""
    response.csp_remote_images = True


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            img = "'self' data:" + (" https:" if getattr(response, "csp_remote_images", False) else "")
            response["Content-Security-Policy"] = POLICY.format(img=img)
        return response
