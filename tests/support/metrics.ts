/**
 * @module Reading a node's /metrics in tests: a counter or gauge, summed over the label sets that
 * match, so that a test waits for what a node has done rather than for time to pass.
 */

/** `name` from `${url}/metrics`, summed over the lines whose labels contain `labels`. */
export async function metric(url: string, name: string, labels = ""): Promise<number> {
  const text = await fetch(`${url}/metrics`).then((r) => r.text());
  let total = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name) || !line.includes(labels)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== " " && rest[0] !== "{") continue;
    total += Number(line.split(" ").pop());
  }
  return total;
}
