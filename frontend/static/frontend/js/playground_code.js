// "View code": the playground's current request as curl and as Python (the OpenAI SDK), with the
// real base URL and model name; the key stays a placeholder read from the environment.

const KEY_VAR = "RLHF_API_KEY";
const OPENAI_PARAMS = ["temperature", "top_p", "max_tokens", "seed"];

const shellQuote = (s) => `'${s.replace(/'/g, `'\\''`)}'`;
const indent = (text, pad) => text.split("\n").map((line, i) => (i ? pad + line : line)).join("\n");
// JSON of strings, numbers and lists is also a Python literal, except true/false/null, which a
// request body of ours never holds inside messages.
const pyValue = (v) => (typeof v === "boolean" ? (v ? "True" : "False") : JSON.stringify(v, null, 4));

/** {curl, python} for POST {baseUrl}/chat/completions with `body` (model, messages, sampling). */
export function codeSnippets(baseUrl, body) {
  const json = JSON.stringify(body, null, 2);
  const curl = [
    `curl ${baseUrl}/chat/completions \\`,
    `  -H "Authorization: Bearer $${KEY_VAR}" \\`,
    `  -H "Content-Type: application/json" \\`,
    `  -d ${shellQuote(json)}`,
  ].join("\n");

  const args = [`model=${JSON.stringify(body.model)},`, `messages=${indent(pyValue(body.messages), "    ")},`];
  for (const name of OPENAI_PARAMS) if (body[name] !== undefined) args.push(`${name}=${pyValue(body[name])},`);
  // Parameters outside OpenAI's API go through the SDK's extra_body.
  const extra = Object.fromEntries(Object.entries(body).filter(([k]) => !["model", "messages", ...OPENAI_PARAMS].includes(k)));
  if (Object.keys(extra).length) args.push(`extra_body=${JSON.stringify(extra)},  # not in OpenAI's API`);
  const python = [
    "import os",
    "",
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url=${JSON.stringify(baseUrl)}, api_key=os.environ[${JSON.stringify(KEY_VAR)}])`,
    "response = client.chat.completions.create(",
    ...args.map((a) => `    ${a}`),
    ")",
    "print(response.choices[0].message.content)",
    "print(response.choices[0].finish_reason, response.usage, response.system_fingerprint)",
  ].join("\n");
  return { curl, python };
}
