// Renders /openapi.json for people: endpoints by tag, the SSE event union, and every schema.

const root = document.getElementById("reference");

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

/** Text with `code` spans, as DOM nodes (never as markup). */
function prose(text) {
  const out = el("span");
  (text || "").split("`").forEach((piece, index) => {
    out.append(index % 2 ? el("code", {}, piece) : piece);
  });
  return out;
}

const refName = (ref) => ref.split("/").pop();

/** A one-line description of a schema, with links to named schemas. */
function type(schema) {
  if (!schema) return el("span", {}, "");
  if (schema.$ref) {
    const name = refName(schema.$ref);
    return el("a", { href: `#schema-${name}` }, name);
  }
  if (schema.const !== undefined) return el("code", {}, JSON.stringify(schema.const));
  if (schema.enum) return el("span", {}, ...schema.enum.flatMap((v, i) => [i ? " | " : "", el("code", {}, JSON.stringify(v))]));
  const union = schema.anyOf || schema.oneOf;
  if (union) return el("span", {}, ...union.flatMap((s, i) => [i ? " | " : "", type(s)]));
  if (schema.type === "array") return el("span", {}, "array of ", type(schema.items));
  if (schema.type === "object" && schema.additionalProperties) {
    return el("span", {}, "object of ", type(schema.additionalProperties));
  }
  const limits = [];
  if (schema.pattern) limits.push(`pattern ${schema.pattern}`);
  if (schema.minLength !== undefined) limits.push(`min length ${schema.minLength}`);
  if (schema.minimum !== undefined) limits.push(`≥ ${schema.minimum}`);
  return el("span", {}, String(schema.type || "any"), limits.length ? el("small", {}, ` (${limits.join(", ")})`) : null);
}

function operation(path, method, op) {
  const card = el("section", { class: "op", id: op.operationId || `${method}-${path}` });
  card.append(el("h3", {}, el("span", { class: `method ${method}` }, method.toUpperCase()), " ", el("code", {}, path)));
  if (op.summary) card.append(el("p", { class: "summary" }, prose(op.summary)));
  if (op.description) card.append(el("p", {}, prose(op.description)));
  if (op.parameters?.length) {
    card.append(el("table", {},
      el("tr", {}, el("th", {}, "parameter"), el("th", {}, "in"), el("th", {}, "type"), el("th", {}, "")),
      ...op.parameters.map((p) => el("tr", {},
        el("td", {}, el("code", {}, p.name), p.required ? " *" : ""), el("td", {}, p.in),
        el("td", {}, type(p.schema)), el("td", {}, prose(p.description))))));
  }
  const body = op.requestBody?.content;
  if (body) {
    for (const [media, { schema }] of Object.entries(body)) {
      card.append(el("p", {}, "body (", el("code", {}, media), "): ", type(schema)));
    }
  }
  card.append(el("table", { class: "responses" },
    el("tr", {}, el("th", {}, "status"), el("th", {}, "body"), el("th", {}, "when")),
    ...Object.entries(op.responses).map(([status, response]) => {
      const content = response.content ? Object.entries(response.content) : [];
      return el("tr", {},
        el("td", {}, el("b", {}, status)),
        el("td", {}, ...content.flatMap(([media, { schema }]) => [el("code", {}, media), " ", type(schema), el("br")])),
        el("td", {}, prose(response.description)));
    })));
  return card;
}

function streams(schemas) {
  const union = schemas.ConversationEvent;
  const section = el("section", { id: "events" }, el("h2", {}, "Stream events"),
    el("p", {}, prose("Both streams send `text/event-stream` frames: `id:` (absent on frames that are not stored), `event:` and one `data:` line of JSON. Resume by sending the last `id:` as `Last-Event-ID`.")));
  const table = el("table", {}, el("tr", {}, el("th", {}, "event"), el("th", {}, "id"), el("th", {}, "data"), el("th", {}, "")));
  for (const [name, ref] of Object.entries(union.discriminator.mapping)) {
    const frame = schemas[refName(ref)];
    table.append(el("tr", {}, el("td", {}, el("code", {}, name)), el("td", {}, frame.properties.id ? "yes" : "no"),
      el("td", {}, type(frame.properties.data)), el("td", {}, prose(frame.description))));
  }
  section.append(table);
  return section;
}

function schemaSection(name, schema) {
  const section = el("section", { class: "schema", id: `schema-${name}` }, el("h3", {}, name));
  if (schema.description) section.append(el("p", {}, prose(schema.description)));
  if (schema.properties) {
    const required = new Set(schema.required || []);
    section.append(el("table", {},
      el("tr", {}, el("th", {}, "field"), el("th", {}, "type"), el("th", {}, "")),
      ...Object.entries(schema.properties).map(([field, sub]) => el("tr", {},
        el("td", {}, el("code", {}, field), required.has(field) ? " *" : ""),
        el("td", {}, type(sub)),
        el("td", {}, prose(sub.description || (sub.default !== undefined ? `default ${JSON.stringify(sub.default)}` : "")))))));
  } else {
    section.append(el("p", {}, type(schema)));
  }
  return section;
}

async function main() {
  const doc = await (await fetch("/openapi.json")).json();
  document.getElementById("api-title").textContent = `${doc.info.title}, API version ${doc.info.version}`;
  const parts = [el("section", {}, ...doc.info.description.split("\n\n").map((p) => el("p", {}, prose(p))),
    el("p", {}, "Fields marked * are required.")) ];
  for (const tag of doc.tags) {
    const section = el("section", { id: `tag-${tag.name}` }, el("h2", {}, tag.name), el("p", {}, prose(tag.description)));
    for (const [path, methods] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(methods)) {
        if ((op.tags || []).includes(tag.name)) section.append(operation(path, method, op));
      }
    }
    parts.push(section);
  }
  parts.push(streams(doc.components.schemas));
  parts.push(el("section", {}, el("h2", {}, "Schemas"),
    ...Object.entries(doc.components.schemas).map(([name, schema]) => schemaSection(name, schema))));
  root.replaceChildren(...parts);
  if (location.hash) document.getElementById(location.hash.slice(1))?.scrollIntoView();
}

main().catch((error) => {
  root.replaceChildren(el("p", {}, `Could not load /openapi.json: ${error}`));
});
