// Starts `essdsl lsp` for .space files. Plain JavaScript, no build step:
// `npm install` in this folder fetches vscode-languageclient, then run the
// folder as an extension (F5) or package it with `npx @vscode/vsce package`.
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const settings = vscode.workspace.getConfiguration("essdsl.server");
  // An executable without a transport talks over stdin/stdout.
  const server = { command: settings.get("command", "essdsl"), args: settings.get("args", ["lsp"]) };
  client = new LanguageClient(
    "essdsl",
    "essdsl language server",
    server,
    { documentSelector: [{ language: "space" }] }
  );
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
