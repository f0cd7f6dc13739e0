// Passkeys on Domicile's hosted pages: the WebAuthn ceremonies of the
// forms marked data-passkey="register" (the passkey page) or "login" (the
// login page). No framework and no inline script: the pages' Content-
// Security-Policy runs only scripts from this origin.
//
// On submit: POST the form's CSRF token (and the typed email, if any) to
// data-begin for the options and a sealed state; run
// navigator.credentials.create or get; put the state and the credential
// (as JSON, binary fields base64url) in the form's hidden fields; post the
// form. A login's form goes to the passkey's home region: the user handle
// starts with the region's name and a "." (see region/passkey.go), which
// the router's home= hint honours. Without this script the form posts no
// credential, and the page that comes back says so.
(function () {
  "use strict";

  function fromB64url(s) {
    var b64 = String(s).replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) { b64 += "="; }
    var bin = atob(b64);
    var out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { out[i] = bin.charCodeAt(i); }
    return out.buffer;
  }

  function toB64url(buf) {
    var bytes = new Uint8Array(buf);
    var bin = "";
    for (var i = 0; i < bytes.length; i++) { bin += String.fromCharCode(bytes[i]); }
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function descriptors(list) {
    return (list || []).map(function (d) {
      var o = { type: d.type, id: fromB64url(d.id) };
      if (d.transports) { o.transports = d.transports; }
      return o;
    });
  }

  function creationOptions(pk) {
    pk.challenge = fromB64url(pk.challenge);
    pk.user.id = fromB64url(pk.user.id);
    if (pk.excludeCredentials) { pk.excludeCredentials = descriptors(pk.excludeCredentials); }
    return pk;
  }

  function requestOptions(pk) {
    pk.challenge = fromB64url(pk.challenge);
    if (pk.allowCredentials) { pk.allowCredentials = descriptors(pk.allowCredentials); }
    return pk;
  }

  // credentialJSON is the PublicKeyCredential as the server reads it
  // (WebAuthn's RegistrationResponseJSON / AuthenticationResponseJSON).
  function credentialJSON(cred) {
    var r = cred.response;
    var out = {
      id: cred.id,
      rawId: toB64url(cred.rawId),
      type: cred.type,
      response: { clientDataJSON: toB64url(r.clientDataJSON) },
      clientExtensionResults: typeof cred.getClientExtensionResults === "function" ? cred.getClientExtensionResults() : {}
    };
    if (cred.authenticatorAttachment) { out.authenticatorAttachment = cred.authenticatorAttachment; }
    if (r.attestationObject) {
      out.response.attestationObject = toB64url(r.attestationObject);
      if (typeof r.getTransports === "function") { out.response.transports = r.getTransports(); }
    } else {
      out.response.authenticatorData = toB64url(r.authenticatorData);
      out.response.signature = toB64url(r.signature);
      if (r.userHandle && r.userHandle.byteLength) { out.response.userHandle = toB64url(r.userHandle); }
    }
    return out;
  }

  // homeOf reads the home region from a user handle: up to 32 of
  // [a-z0-9-], then ".". "" if it is not one of ours.
  function homeOf(handle) {
    if (!handle) { return ""; }
    var b = new Uint8Array(handle);
    var s = "";
    for (var i = 0; i < b.length && i <= 32; i++) {
      if (b[i] === 0x2e) { return /^[a-z0-9-]{1,32}$/.test(s) ? s : ""; }
      s += String.fromCharCode(b[i]);
    }
    return "";
  }

  function field(form, name) { return form.elements.namedItem(name); }

  function say(form, text) {
    var status = form.querySelector("[role=status]");
    if (status) { status.textContent = text; }
  }

  // begin asks the server for the ceremony's options; it rejects with a
  // message fit to show.
  function begin(form) {
    var body = new URLSearchParams();
    body.set("csrf", field(form, "csrf").value);
    if (form.dataset.email) { body.set("email", form.dataset.email); }
    return fetch(form.dataset.begin, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Accept": "application/json" },
      body: body
    }).then(function (res) {
      var type = res.headers.get("Content-Type") || "";
      if (res.ok && !res.redirected && type.indexOf("application/json") === 0) { return res.json(); }
      if (type.indexOf("json") >= 0) {
        return res.json().then(function (p) {
          throw new Error((p && p.detail) || "The passkey could not be started. Reload the page and try again.");
        });
      }
      throw new Error("Your session may have ended. Reload the page and try again.");
    }, function () {
      throw new Error("The service could not be reached. Check your connection and try again.");
    });
  }

  function explain(err) {
    switch (err && err.name) {
      case "NotAllowedError":
        return "The passkey request was cancelled or timed out. Try again.";
      case "InvalidStateError":
        return "This device already has a passkey for your account.";
      case "SecurityError":
        return "Passkeys cannot be used on this address.";
      case "NotSupportedError":
        return "This browser or device cannot make a passkey that works here.";
    }
    return (err && err.message) || "Something went wrong. Try again.";
  }

  function run(form) {
    var kind = form.dataset.passkey;
    var button = form.querySelector("button[type=submit]");
    if (!window.PublicKeyCredential || !navigator.credentials) {
      say(form, "This browser does not support passkeys.");
      return;
    }
    button.disabled = true;
    say(form, kind === "register" ? "Follow your browser's prompt to create the passkey." : "Follow your browser's prompt to choose a passkey.");
    begin(form).then(function (opts) {
      field(form, "state").value = opts.state;
      if (kind === "register") { return navigator.credentials.create({ publicKey: creationOptions(opts.publicKey) }); }
      return navigator.credentials.get({ publicKey: requestOptions(opts.publicKey) });
    }).then(function (cred) {
      if (!cred) { throw new Error("No passkey was chosen."); }
      if (kind === "login") {
        var home = homeOf(cred.response.userHandle);
        if (!home) { throw new Error("This passkey is not one of this site's."); }
        form.setAttribute("action", form.getAttribute("action").split("?")[0] + "?home=" + encodeURIComponent(home));
      }
      field(form, "credential").value = JSON.stringify(credentialJSON(cred));
      say(form, "Checking the passkey.");
      form.submit();
    }).catch(function (err) {
      button.disabled = false;
      say(form, explain(err));
      button.focus();
    });
  }

  // A page restored from the back-forward cache keeps its buttons usable.
  window.addEventListener("pageshow", function () {
    var buttons = document.querySelectorAll("form[data-passkey] button[type=submit]");
    for (var i = 0; i < buttons.length; i++) { buttons[i].disabled = false; }
  });

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (form && form.dataset && form.dataset.passkey && form.dataset.begin) {
      ev.preventDefault();
      run(form);
    }
  });
}());
