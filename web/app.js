/**
 * @module The Parley web client: what the user sees and does, on top of `Session`. State lives in
 * plain maps; the DOM is updated in place (list entries and messages are kept by key) so that
 * focus and scroll positions survive live updates. No inline scripts or styles: the server's
 * Content-Security-Policy allows only files from this origin.
 */
import { ConnectionError, ServerError, Session } from "./session.js";

const HISTORY_PAGE = 50;
const NAME_RE = /^[A-Za-z0-9_.-]{1,32}$/;

const $ = (id) => document.getElementById(id);

/** Creates an element with a class and text; children are appended after the text. */
function el(tag, className, text, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  node.append(...children);
  return node;
}

/** localStorage, or memory where the browser refuses it (some private modes). */
function storage() {
  try {
    const probe = "parley.probe";
    localStorage.setItem(probe, "1");
    localStorage.removeItem(probe);
    return localStorage;
  } catch {
    const memory = new Map();
    return {
      getItem: (k) => memory.get(k) ?? null,
      setItem: (k, v) => memory.set(k, String(v)),
      removeItem: (k) => memory.delete(k),
    };
  }
}

/** A clientId for `send`: random, and available outside secure contexts too. */
function newClientId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

const timeOnly = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayAndTime = new Intl.DateTimeFormat(undefined, {
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
});

function count(n, noun) {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

function formatTime(iso) {
  const at = new Date(iso);
  return at.toDateString() === new Date().toDateString()
    ? timeOnly.format(at)
    : dayAndTime.format(at);
}

// ---- State -----------------------------------------------------------------------------------

const state = {
  /** { id, name } once welcomed. */
  me: null,
  /** Friends, and people who wrote without being friends: id -> { id, name, online, friend }. */
  contacts: new Map(),
  /** id -> { id, name, description, members: Map(id -> { id, name, role, online }) }. */
  groups: new Map(),
  /** "user:5" or "group:3" -> conversation, made on first use. */
  conversations: new Map(),
  /** The key of the open conversation, or null. */
  open: null,
  /** Whether the chat screen has been shown since the last login (vs. still resuming). */
  welcomed: false,
  /** Whom this user blocks: id -> name, or null when only the id is known (welcome). */
  blocked: new Map(),
  /** Who is typing, by conversation key: userId -> the timer that ends the notice. */
  typing: new Map(),
  /** The last search: its query and the users found, or null. */
  found: null,
};

/** How long "… is typing" stays without a new notice (PROTOCOL.md). */
const TYPING_SHOWN_MS = 5000;
/**
 * This client tells the server at most this often that its user is typing: a little over the
 * server's 1 s, so that jitter does not make the server drop every other one.
 */
const TYPING_SEND_MS = 1500;

function targetOf(key) {
  const [kind, id] = key.split(":");
  return kind === "user" ? { user: Number(id) } : { group: Number(id) };
}

function keyOfTarget(target) {
  return target.group !== undefined ? `group:${target.group}` : `user:${target.user}`;
}

/** Unread, as every device of the user counts it: own messages never lie beyond readSeq. */
function unreadOf(conv) {
  return conv ? Math.max(0, conv.lastSeq - conv.readSeq) : 0;
}

function keyOfMessage(message) {
  if (message.to.group !== undefined) return `group:${message.to.group}`;
  const other = message.from.id === state.me.id ? message.to.user : message.from.id;
  return `user:${other}`;
}

function conversation(key) {
  let conv = state.conversations.get(key);
  if (!conv) {
    conv = {
      key,
      target: targetOf(key),
      /** Committed messages by id. */
      messages: new Map(),
      /** Own messages not yet confirmed, by clientId, in the order written. */
      pending: new Map(),
      /** The last seq of its log known here, and how far this user read it (every device). */
      lastSeq: 0,
      readSeq: 0,
      /** In a direct conversation: how far the other user read it (its `read` pushes). */
      otherReadSeq: 0,
      loaded: false,
      complete: false,
      loading: false,
    };
    state.conversations.set(key, conv);
  }
  return conv;
}

function resetState() {
  state.me = null;
  state.contacts = new Map();
  state.groups = new Map();
  state.conversations = new Map();
  state.open = null;
  state.welcomed = false;
  state.blocked = new Map();
  for (const typists of state.typing.values()) {
    for (const timer of typists.values()) clearTimeout(timer);
  }
  state.typing = new Map();
  state.found = null;
  $("messages").replaceChildren();
  $("typing").textContent = "";
  $("find-results").replaceChildren();
  $("find-results").hidden = true;
  $("find-status").textContent = "";
}

function toGroup(group) {
  return {
    id: group.id,
    name: group.name,
    description: group.description ?? "",
    members: new Map(group.members.map((m) => [m.id, { ...m }])),
  };
}

function displayName(key) {
  const { user, group } = targetOf(key);
  if (user !== undefined) return state.contacts.get(user)?.name ?? `user ${user}`;
  return state.groups.get(group)?.name ?? `group ${group}`;
}

/** The conversation is open and the page is visible: what arrives is seen. */
function onScreen(key) {
  return state.open === key && document.visibilityState === "visible";
}

// ---- Session ---------------------------------------------------------------------------------

const session = new Session({
  url: `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`,
  storage: storage(),
  onWelcome: welcomed,
  onPush: pushed,
  onState: connectionChanged,
});

function welcomed(welcome) {
  const same = state.me?.id === welcome.user.id;
  if (!same) resetState();
  state.me = welcome.user;
  const strangers = [...state.contacts.values()].filter((c) => !c.friend);
  state.contacts = new Map(welcome.friends.map((f) => [f.id, { ...f, friend: true }]));
  for (const s of strangers) if (!state.contacts.has(s.id)) state.contacts.set(s.id, s);
  state.groups = new Map(welcome.groups.map((g) => [g.id, toGroup(g)]));
  const names = new Map([...state.blocked].filter(([, name]) => name !== null));
  state.blocked = new Map((welcome.blocked ?? []).map((id) => [id, names.get(id) ?? null]));
  // The server's counts, the same on every device.
  for (const c of welcome.conversations ?? []) {
    const conv = conversation(keyOfTarget(c.with));
    conv.lastSeq = Math.max(conv.lastSeq, c.lastSeq);
    conv.readSeq = Math.max(conv.readSeq, c.readSeq);
    if (c.with.user !== undefined && !state.contacts.has(c.with.user) && unreadOf(conv) > 0) {
      addContact({ id: c.with.user, name: `user ${c.with.user}`, online: false }, false);
      state.contacts.get(c.with.user).unnamed = true;
    }
  }
  if (state.open?.startsWith("group:") && !state.groups.has(targetOf(state.open).group)) {
    closeConversation(); // Left on another device while this one was away.
  }
  state.welcomed = true;
  showChat();
  renderMe();
  renderLists();
  if (state.open) {
    renderConversationHead();
    // Catch up on what the open conversation missed while disconnected.
    if (same) void loadLatest(conversation(state.open));
  }
  for (const conv of state.conversations.values()) {
    for (const pending of conv.pending.values()) void trySend(conv, pending);
  }
  flushAcks();
}

function pushed(frame) {
  switch (frame.type) {
    case "message":
      return received(frame.message);
    case "presence":
      return presenceChanged(frame.user, frame.online);
    case "friend.added":
      addContact(frame.friend, true);
      notify(`${frame.friend.name} added you as a friend`);
      return;
    case "group.member": {
      const group = state.groups.get(frame.group);
      if (!group) return;
      group.members.set(frame.member.id, { ...frame.member });
      renderLists();
      if (state.open === `group:${group.id}`) renderConversationHead();
      notify(`${frame.member.name} joined ${group.name}`);
      return;
    }
    case "message.edited":
      applyEdit(frame.message);
      return changeLogged(
        keyOfMessage(frame.message),
        frame.seq,
        frame.message.from.id === state.me.id,
      );
    case "message.deleted":
      applyDelete(frame.with, frame.id);
      return changeLogged(keyOfTarget(frame.with), frame.seq, false);
    case "friend.removed": {
      const name = state.contacts.get(frame.user)?.name ?? `user ${frame.user}`;
      unfriended(frame.user);
      notify(`${name} is no longer your friend`);
      return;
    }
    case "group.member.left":
      return memberLeft(frame.group, frame.user);
    case "typing":
      return typingNotice(frame.from, frame.with);
    case "read":
      return readPushed(frame);
    case "error":
      // Typing is never answered but with an error (a block): nothing for the user to act on.
      if (frame.ref === TYPING_REF) return;
      showError(frame.message);
      return;
  }
}

function connectionChanged(now, detail) {
  const line = $("connection");
  line.dataset.state = now;
  $("logout").hidden = now === "out";
  switch (now) {
    case "out":
      line.textContent = "Not signed in";
      resetState();
      showAuth();
      if (detail.reason === "expired") showError("Your session has ended: log in again");
      break;
    case "connecting":
      line.textContent = "Connecting…";
      break;
    case "online":
      line.textContent = "Connected";
      hideError();
      break;
    case "waiting": {
      const seconds = Math.max(1, Math.round(detail.delayMs / 1000));
      line.textContent = detail.reason === "already_online"
        ? `Account online elsewhere: retrying in ${seconds} s`
        : `Connection lost: reconnecting in ${seconds} s`;
      if (!state.welcomed) {
        $("resume-text").textContent = detail.reason === "already_online"
          ? `${detail.message}. Trying again in ${seconds} s…`
          : `Cannot reach the server. Trying again in ${seconds} s…`;
      }
      break;
    }
    case "replaced":
      line.textContent = "Disconnected: opened elsewhere";
      showError(
        "Your account was opened in another window or device, so this page was disconnected: " +
          "it will not reconnect by itself",
        { label: "Reconnect here", run: () => session.resume() },
      );
      break;
  }
}

// ---- Views -----------------------------------------------------------------------------------

function showAuth() {
  $("chat-view").hidden = true;
  $("skip-link").hidden = true;
  $("auth-view").hidden = false;
  $("resume").hidden = true;
  $("auth-form").hidden = false;
  setAuthBusy(false);
}

function showResuming() {
  $("chat-view").hidden = true;
  $("auth-view").hidden = false;
  $("auth-form").hidden = true;
  $("resume").hidden = false;
  const name = session.savedName;
  $("resume-text").textContent = name ? `Resuming your session as ${name}…` : "Resuming…";
}

function showChat() {
  const wasHidden = $("chat-view").hidden;
  $("auth-view").hidden = true;
  $("chat-view").hidden = false;
  $("skip-link").hidden = false;
  if (wasHidden) {
    renderConversationHead();
    (state.open ? $("message-input") : $("sidebar").querySelector("button, input"))?.focus();
  }
}

let noticeTimer;
function notify(text) {
  $("notice").textContent = text;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => $("notice").textContent = "", 8000);
}

let alertAction = null;
function showError(text, action = null) {
  $("alert-text").textContent = text;
  $("alert").hidden = false;
  alertAction = action;
  const button = $("alert-close");
  button.textContent = action ? action.label : "Dismiss";
  button.setAttribute("aria-label", action ? action.label : "Dismiss the error");
}

function hideError() {
  $("alert").hidden = true;
  alertAction = null;
}

/** The words for a failed request: the server's own sentence, or what went wrong on the way. */
function describe(error) {
  if (error instanceof ServerError || error instanceof ConnectionError) return error.message;
  return `Something went wrong: ${error?.message ?? error}`;
}

// ---- Side list -------------------------------------------------------------------------------

function renderMe() {
  const me = $("me");
  me.replaceChildren(
    "Signed in as ",
    el("strong", "", state.me.name),
    ", id ",
    el("strong", "", String(state.me.id)),
    el("span", "hint", " (give your id to friends)"),
  );
}

function contactEntries(friends) {
  return [...state.contacts.values()]
    .filter((c) => c.friend === friends && !state.blocked.has(c.id))
    .sort((a, b) => a.name.localeCompare(b.name) || a.id - b.id)
    .map((c) => ({
      key: `user:${c.id}`,
      name: c.name,
      dot: friends ? (c.online ? "dot online" : "dot") : "dot unknown",
      presence: friends ? (c.online ? "online" : "offline") : `not a friend, id ${c.id}`,
      actions: [
        ...(friends
          ? [{ label: "Unfriend", name: `Unfriend ${c.name}`, run: () => unfriend(c.id) }]
          : []),
        { label: "Block", name: `Block ${c.name}`, run: () => block(c.id) },
      ],
    }));
}

function blockedEntries() {
  return [...state.blocked.entries()]
    .map(([id, name]) => ({ id, name: name ?? state.contacts.get(id)?.name ?? `user ${id}` }))
    .sort((a, b) => a.name.localeCompare(b.name) || a.id - b.id)
    .map(({ id, name }) => ({
      key: `user:${id}`,
      name,
      dot: "dot unknown",
      presence: `blocked, id ${id}`,
      actions: [{ label: "Unblock", name: `Unblock ${name}`, run: () => unblock(id) }],
    }));
}

function groupEntries() {
  return [...state.groups.values()]
    .sort((a, b) => a.name.localeCompare(b.name) || a.id - b.id)
    .map((g) => {
      const members = [...g.members.values()];
      const online = members.filter((m) => m.online).length;
      return {
        key: `group:${g.id}`,
        name: g.name,
        dot: online > 1 ? "dot group online" : "dot group",
        presence: `group ${g.id}, ${count(members.length, "member")}, ${online} online`,
        actions: [{ label: "Leave group", name: `Leave group ${g.name}`, run: () => leave(g.id) }],
      };
    });
}

function renderLists() {
  const friends = contactEntries(true);
  const others = contactEntries(false);
  const blocked = blockedEntries();
  renderList($("friends"), friends);
  renderList($("groups"), groupEntries());
  renderList($("others"), others);
  renderList($("blocked"), blocked);
  $("friends-empty").hidden = friends.length > 0;
  $("groups-empty").hidden = state.groups.size > 0;
  $("others").hidden = $("others-title").hidden = others.length === 0;
  $("blocked").hidden = $("blocked-title").hidden = blocked.length === 0;
  if (state.found) renderFound();
}

/** Updates the list in place: entries keep their element (and focus) across renders. */
function renderList(list, entries) {
  const existing = new Map([...list.children].map((li) => [li.dataset.key, li]));
  entries.forEach((entry, i) => {
    let li = existing.get(entry.key);
    existing.delete(entry.key);
    if (!li) li = newEntry(entry.key);
    updateEntry(li, entry);
    if (list.children[i] !== li) list.insertBefore(li, list.children[i] ?? null);
  });
  for (const li of existing.values()) li.remove();
}

let nextMenuId = 1;

function newEntry(key) {
  const li = el("li", "entry");
  li.dataset.key = key;
  const button = el(
    "button",
    "contact",
    null,
    el("span", "dot"),
    el("span", "name"),
    el("span", "presence"),
    el("span", "badge"),
  );
  button.type = "button";
  button.querySelector(".dot").setAttribute("aria-hidden", "true");
  button.addEventListener("click", () => openConversation(key));
  // The entry's own actions (unfriend, block, unblock, leave) behind a disclosure button.
  const menu = el("div", "entry-actions");
  menu.id = `entry-actions-${nextMenuId++}`;
  menu.hidden = true;
  const more = el("button", "quiet more", "⋯");
  more.type = "button";
  more.setAttribute("aria-expanded", "false");
  more.setAttribute("aria-controls", menu.id);
  more.addEventListener("click", () => toggleMenu(more, menu, menu.hidden));
  menu.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    event.stopPropagation();
    toggleMenu(more, menu, false);
    more.focus();
  });
  li.append(button, more, menu);
  return li;
}

function toggleMenu(more, menu, open) {
  menu.hidden = !open;
  more.setAttribute("aria-expanded", String(open));
  if (open) menu.querySelector("button")?.focus();
}

function updateEntry(li, entry) {
  const button = li.querySelector(".contact");
  const unread = unreadOf(state.conversations.get(entry.key));
  button.querySelector(".dot").className = entry.dot;
  button.querySelector(".name").textContent = entry.name;
  button.querySelector(".presence").textContent = entry.presence;
  const badge = button.querySelector(".badge");
  if (unread > 0) badge.replaceChildren(String(unread), el("span", "visually-hidden", " unread"));
  else badge.replaceChildren();
  li.dataset.online = String(entry.dot.includes("online"));
  li.dataset.unread = String(unread);
  button.setAttribute("aria-current", String(state.open === entry.key));
  const more = li.querySelector(".more");
  more.setAttribute("aria-label", `Actions for ${entry.name}`);
  const menu = li.querySelector(".entry-actions");
  const signature = entry.actions.map((a) => a.name).join("|");
  if (menu.dataset.signature === signature) return;
  menu.dataset.signature = signature;
  menu.replaceChildren(...entry.actions.map((action) => {
    const b = el("button", "secondary", action.label);
    b.type = "button";
    b.setAttribute("aria-label", action.name);
    b.addEventListener("click", () => {
      toggleMenu(more, menu, false);
      action.run();
    });
    return b;
  }));
}

function addContact(friend, isFriend) {
  const known = state.contacts.get(friend.id);
  state.contacts.set(friend.id, {
    id: friend.id,
    name: friend.name,
    online: friend.online ?? known?.online ?? false,
    friend: isFriend || (known?.friend ?? false),
  });
  renderLists();
  if (state.open === `user:${friend.id}`) renderConversationHead();
}

function presenceChanged(userId, online) {
  const contact = state.contacts.get(userId);
  if (contact) contact.online = online;
  for (const group of state.groups.values()) {
    const member = group.members.get(userId);
    if (member) member.online = online;
  }
  renderLists();
  if (state.open) renderConversationHead();
}

/** The friendship ended (here, on another device, or by the other side). */
function unfriended(userId) {
  const contact = state.contacts.get(userId);
  if (!contact) return;
  contact.friend = false;
  contact.online = false;
  // Someone no longer a friend stays listed only while there is a conversation to come back to.
  const conv = state.conversations.get(`user:${userId}`);
  if (state.open !== `user:${userId}` && !(conv && conv.messages.size > 0)) {
    state.contacts.delete(userId);
  }
  renderLists();
  if (state.open === `user:${userId}`) renderConversationHead();
}

/** Runs one of the list's actions, saying what happened or what went wrong. */
async function acting(work) {
  try {
    hideError();
    await work();
  } catch (error) {
    showError(describe(error));
  }
}

function nameOf(userId) {
  return state.contacts.get(userId)?.name ?? state.blocked.get(userId) ??
    state.found?.users.find((u) => u.id === userId)?.name ?? `user ${userId}`;
}

function unfriend(userId) {
  const name = nameOf(userId);
  return acting(async () => {
    await session.request({ type: "friend.remove", user: userId });
    unfriended(userId);
    notify(`${name} is no longer your friend`);
    $("friend-input").focus();
  });
}

function block(userId) {
  const name = nameOf(userId);
  return acting(async () => {
    await session.request({ type: "user.block", user: userId });
    state.blocked.set(userId, name);
    unfriended(userId);
    notify(`You blocked ${name}: no messages or friend requests either way until you unblock`);
    document.querySelector(`#blocked [data-key="user:${userId}"] .more`)?.focus();
  });
}

function unblock(userId) {
  const name = nameOf(userId);
  return acting(async () => {
    await session.request({ type: "user.unblock", user: userId });
    state.blocked.delete(userId);
    renderLists();
    if (state.open === `user:${userId}`) renderConversationHead();
    notify(`You unblocked ${name}`);
    $("friend-input").focus();
  });
}

function leave(groupId) {
  const name = state.groups.get(groupId)?.name ?? `group ${groupId}`;
  return acting(async () => {
    await session.request({ type: "group.leave", group: groupId });
    removeGroup(groupId);
    notify(`You left ${name}; join it again with its id, ${groupId}`);
    $("group-id-input").focus();
  });
}

function removeGroup(groupId) {
  state.groups.delete(groupId);
  state.conversations.delete(`group:${groupId}`);
  state.typing.delete(`group:${groupId}`);
  if (state.open === `group:${groupId}`) closeConversation();
  renderLists();
}

function memberLeft(groupId, userId) {
  const group = state.groups.get(groupId);
  if (!group) return;
  if (userId === state.me.id) {
    removeGroup(groupId); // Left on another device.
    notify(`You left ${group.name}`);
    return;
  }
  const name = group.members.get(userId)?.name ?? `user ${userId}`;
  group.members.delete(userId);
  stopTyping(`group:${groupId}`, userId);
  renderLists();
  if (state.open === `group:${groupId}`) renderConversationHead();
  notify(`${name} left ${group.name}`);
}

// ---- Typing ----------------------------------------------------------------------------------

/** The ref typing frames carry: their only answer is an error, which is not for the user. */
const TYPING_REF = "typing";
const typingSentAt = new Map();

/** Tells the open conversation that this user is typing, at most every TYPING_SEND_MS. */
function sendTyping() {
  const key = state.open;
  if (!key || $("message-input").value.trim() === "") return;
  const { user } = targetOf(key);
  if (user !== undefined && state.blocked.has(user)) return;
  const now = Date.now();
  if (now - (typingSentAt.get(key) ?? 0) < TYPING_SEND_MS) return;
  if (session.send({ type: "typing", to: targetOf(key), ref: TYPING_REF })) {
    typingSentAt.set(key, now);
  }
}

function typingNotice(from, withWhom) {
  const key = withWhom.group !== undefined ? `group:${withWhom.group}` : `user:${withWhom.user}`;
  let typists = state.typing.get(key);
  if (!typists) state.typing.set(key, typists = new Map());
  clearTimeout(typists.get(from));
  typists.set(from, setTimeout(() => stopTyping(key, from), TYPING_SHOWN_MS));
  if (state.open === key) renderTyping();
}

function stopTyping(key, userId) {
  const typists = state.typing.get(key);
  if (!typists?.has(userId)) return;
  clearTimeout(typists.get(userId));
  typists.delete(userId);
  if (state.open === key) renderTyping();
}

function renderTyping() {
  const typists = state.open ? [...(state.typing.get(state.open)?.keys() ?? [])] : [];
  const { group } = state.open ? targetOf(state.open) : {};
  const names = typists.map((id) =>
    (group !== undefined ? state.groups.get(group)?.members.get(id)?.name : null) ?? nameOf(id)
  );
  const text = names.length === 0
    ? ""
    : names.length === 1
    ? `${names[0]} is typing…`
    : names.length === 2
    ? `${names[0]} and ${names[1]} are typing…`
    : `${names.length} people are typing…`;
  if ($("typing").textContent !== text) $("typing").textContent = text;
}

// ---- Finding people --------------------------------------------------------------------------

function findPeople(event) {
  event.preventDefault();
  const query = $("find-input").value.trim();
  if (!query) return;
  void submitting(event.target, async () => {
    const reply = await session.request({ type: "user.search", query });
    state.found = { query, users: reply.users };
    renderFound();
  });
}

/** The people found, each with what can be done: add as a friend, or open the conversation. */
function renderFound() {
  const { query, users } = state.found;
  const list = $("find-results");
  $("find-status").textContent = users.length === 0
    ? `No one's name starts with "${query}"`
    : `${count(users.length, "person")} found for "${query}"`.replace("persons", "people");
  list.hidden = users.length === 0;
  const focused = document.activeElement?.closest?.("#find-results li")?.dataset.id;
  list.replaceChildren(...users.map((user) => {
    const li = el(
      "li",
      "result",
      null,
      el("span", "name", user.name),
      el("span", "hint", `id ${user.id}`),
    );
    li.dataset.id = String(user.id);
    const contact = state.contacts.get(user.id);
    let button;
    if (state.blocked.has(user.id)) {
      li.append(el("span", "hint", "blocked"));
    } else if (contact?.friend) {
      button = el("button", "secondary", "Open");
      button.setAttribute("aria-label", `Open the conversation with ${user.name}`);
      button.addEventListener("click", () => openConversation(`user:${user.id}`));
    } else {
      button = el("button", "", "Add");
      button.setAttribute("aria-label", `Add ${user.name} as a friend`);
      button.addEventListener("click", () => void acting(() => befriend(user.id)));
    }
    if (button) {
      button.type = "button";
      li.append(button);
    }
    return li;
  }));
  if (focused) list.querySelector(`li[data-id="${focused}"] button`)?.focus();
}

// ---- Conversation ----------------------------------------------------------------------------

function openConversation(key) {
  state.open = key;
  $("chat-view").classList.add("in-conversation");
  const conv = conversation(key);
  renderConversationHead();
  renderMessages(conv);
  renderTyping();
  markRead(conv);
  renderLists();
  $("message-input").disabled = false;
  $("send-button").disabled = false;
  $("message-input").focus();
  if (!conv.loaded) void loadLatest(conv);
  else scrollToEnd();
}

function closeConversation() {
  const key = state.open;
  state.open = null;
  $("chat-view").classList.remove("in-conversation");
  renderLists();
  $("message-input").disabled = true;
  $("send-button").disabled = true;
  renderConversationHead();
  renderTyping();
  $("messages").replaceChildren();
  $("older").hidden = true;
  $("history-start").hidden = true;
  document.querySelector(`[data-key="${key}"] button`)?.focus();
}

function renderConversationHead() {
  const title = $("conversation-title");
  const detail = $("conversation-detail");
  const members = $("members");
  $("befriend").hidden = true;
  if (!state.open) {
    title.textContent = "No conversation open";
    detail.textContent = "Choose a friend or a group in the list.";
    members.hidden = true;
    return;
  }
  const { user, group } = targetOf(state.open);
  if (user !== undefined) {
    const contact = state.contacts.get(user);
    title.textContent = contact?.name ?? `user ${user}`;
    const presence = state.blocked.has(user)
      ? "blocked"
      : contact?.friend
      ? (contact.online ? "online" : "offline")
      : "not a friend";
    detail.replaceChildren(
      el("span", contact?.friend && contact.online ? "dot online" : "dot"),
      ` ${presence} · id ${user}`,
    );
    detail.firstElementChild.setAttribute("aria-hidden", "true");
    members.hidden = true;
    $("befriend").hidden = (contact?.friend ?? false) || state.blocked.has(user);
    return;
  }
  const g = state.groups.get(group);
  title.textContent = g?.name ?? `group ${group}`;
  detail.textContent = `Group ${group}${g?.description ? ` · ${g.description}` : ""}`;
  if (!g) {
    members.hidden = true;
    return;
  }
  const list = [...g.members.values()].sort((a, b) => a.name.localeCompare(b.name));
  $("members-summary").textContent = `Members: ${list.length}, ${
    list.filter((m) => m.online).length
  } online`;
  $("members-list").replaceChildren(...list.map((m) => {
    const dot = el("span", m.online ? "dot online" : "dot");
    dot.setAttribute("aria-hidden", "true");
    return el(
      "li",
      "",
      null,
      dot,
      el("span", "", m.name),
      el("span", "role", `${m.online ? "online" : "offline"}, ${m.role}, id ${m.id}`),
    );
  }));
  members.hidden = false;
}

/** What is on screen is read: the server is told, and every device of the user shows it. */
function markRead(conv) {
  if (!onScreen(conv.key) || conv.readSeq >= conv.lastSeq) return;
  conv.readSeq = conv.lastSeq;
  session.send({ type: "read", with: conv.target, seq: conv.readSeq });
}

/** A committed event of `conv` is here (pushed, replayed, or the reply to an own send). */
function logged(conv, message) {
  conv.lastSeq = Math.max(conv.lastSeq, message.seq);
  if (message.from.id === state.me.id) conv.readSeq = Math.max(conv.readSeq, message.seq);
  queueAck(conv, message.seq);
}

function received(message) {
  const key = keyOfMessage(message);
  if (message.to.user !== undefined && message.from.id !== state.me.id) {
    const known = state.contacts.get(message.from.id);
    if (!known) addContact({ ...message.from, online: false }, false);
    else if (known.unnamed) {
      known.name = message.from.name;
      delete known.unnamed;
      renderLists();
    }
  }
  stopTyping(key, message.from.id);
  const conv = conversation(key);
  // Events of one conversation come in seq order; one already here (replayed after a reconnect,
  // or both pushed and in a history page) is dropped, but acknowledged again.
  logged(conv, message);
  if (conv.messages.has(message.id)) return;
  conv.messages.set(message.id, message);
  if (state.open === key) {
    const atEnd = nearEnd();
    placeMessage(message);
    if (atEnd) scrollToEnd();
  }
  markRead(conv);
  renderLists();
}

/** `read`: this user read on another device, or the other user of a direct conversation did. */
function readPushed(frame) {
  const conv = conversation(keyOfTarget(frame.with));
  if (frame.user === state.me?.id) {
    conv.readSeq = Math.max(conv.readSeq, frame.seq);
    renderLists();
    return;
  }
  conv.otherReadSeq = Math.max(conv.otherReadSeq, frame.seq);
  if (state.open === conv.key) renderSeen(conv);
}

/** "seen" under the last own message the other user has read, "sent" under the others. */
function renderSeen(conv) {
  if (conv.target.user === undefined) return;
  const mine = [
    ...$("messages").querySelectorAll("li.message.mine[data-seq]:not([data-deleted])"),
  ];
  const seen = mine.filter((li) => Number(li.dataset.seq) <= conv.otherReadSeq).at(-1);
  for (const li of mine) {
    const label = li.querySelector('.state[data-state="sent"], .state[data-state="seen"]');
    const kind = li === seen ? "seen" : "sent";
    if (label.dataset.state === kind) continue;
    label.dataset.state = kind;
    label.textContent = kind;
  }
}

async function loadLatest(conv) {
  await loadHistory(conv, undefined);
  if (state.open === conv.key) scrollToEnd();
}

async function loadOlder(conv) {
  if (conv.complete || conv.loading || !conv.loaded) return;
  const oldest = Math.min(...conv.messages.keys());
  if (!Number.isFinite(oldest)) return;
  const box = $("messages-box");
  const before = box.scrollHeight - box.scrollTop;
  await loadHistory(conv, oldest);
  // Keep the message the reader was looking at where it was.
  if (state.open === conv.key) box.scrollTop = box.scrollHeight - before;
}

async function loadHistory(conv, before) {
  if (conv.loading) return;
  conv.loading = true;
  const list = $("messages");
  list.setAttribute("aria-busy", "true");
  try {
    const reply = await session.request({
      type: "history",
      with: conv.target,
      limit: HISTORY_PAGE,
      ...(before !== undefined ? { before } : {}),
    });
    const visible = state.open === conv.key;
    for (const message of reply.messages) {
      if (conv.messages.has(message.id)) continue;
      conv.messages.set(message.id, message);
      if (visible) placeMessage(message);
    }
    if (before !== undefined || !conv.loaded) {
      conv.complete = reply.messages.length < HISTORY_PAGE;
    }
    conv.loaded = true;
  } catch (error) {
    showError(`Could not load the history of ${displayName(conv.key)}: ${describe(error)}`);
  } finally {
    conv.loading = false;
    list.removeAttribute("aria-busy");
    if (state.open === conv.key) renderHistoryEdge(conv);
  }
}

function renderHistoryEdge(conv) {
  $("older").hidden = conv.complete || !conv.loaded;
  $("history-start").hidden = !conv.complete;
}

function renderMessages(conv) {
  const list = $("messages");
  list.replaceChildren();
  const ids = [...conv.messages.keys()].sort((a, b) => a - b);
  list.append(...ids.map((id) => messageItem(conv.messages.get(id))));
  for (const pending of conv.pending.values()) list.append(pendingItem(pending));
  renderHistoryEdge(conv);
  renderSeen(conv);
}

/**
 * Puts a committed message in id order, before the pending ones (which commit later). An edit
 * form open on it stays, unless `replace` (the edit is done); focus moves to its Edit button then.
 */
function placeMessage(message, replace = false) {
  const list = $("messages");
  const existing = list.querySelector(`[data-id="${message.id}"]`);
  if (existing) {
    if (!replace && existing.querySelector(".edit-form") && !message.deleted) return;
    const item = messageItem(message);
    existing.replaceWith(item);
    if (replace) item.querySelector(".message-actions button")?.focus();
  } else {
    const after = [...list.children].find((li) =>
      li.dataset.id === undefined || Number(li.dataset.id) > message.id
    );
    list.insertBefore(messageItem(message), after ?? null);
  }
  if (message.from.id === state.me?.id) renderSeen(conversation(keyOfMessage(message)));
}

function messageItem(message) {
  const mine = message.from.id === state.me?.id;
  const time = el("time", "", formatTime(message.at));
  time.dateTime = message.at;
  const meta = el(
    "div",
    "meta",
    null,
    el("span", "sender", mine ? "You" : message.from.name),
    time,
  );
  if (mine && !message.deleted) meta.append(stateLabel("sent", "sent"));
  if (message.deleted) {
    meta.append(stateLabel("deleted", "deleted"));
  } else if (message.editedAt) {
    const edited = stateLabel("edited", "edited");
    edited.title = `Edited ${formatTime(message.editedAt)}`;
    meta.append(edited);
  }
  const text = message.deleted
    ? el("p", "text deleted", "This message was deleted")
    : el("p", "text", message.text);
  text.id = `message-text-${message.id}`;
  const li = el("li", mine ? "message mine" : "message", null, meta, text);
  li.dataset.id = String(message.id);
  li.dataset.seq = String(message.seq);
  if (message.deleted) li.dataset.deleted = "true";
  if (mine && !message.deleted) li.append(messageActions(message));
  return li;
}

/** "Edit" and "Delete" on an own message, described by its text for screen readers. */
function messageActions(message) {
  const actions = el("div", "message-actions");
  for (const [label, run] of [["Edit", startEdit], ["Delete", deleteMessage]]) {
    const button = el("button", "quiet", label);
    button.type = "button";
    button.setAttribute("aria-describedby", `message-text-${message.id}`);
    button.addEventListener("click", () => run(message.id));
    actions.append(button);
  }
  return actions;
}

/** Replaces an own message's text by a form to change it; Escape or Cancel leaves it as it was. */
function startEdit(id) {
  const conv = conversation(state.open);
  const message = conv.messages.get(id);
  const li = $("messages").querySelector(`[data-id="${id}"]`);
  if (!message || message.deleted || !li) return;
  const input = el("textarea");
  input.id = `edit-input-${id}`;
  input.rows = 2;
  input.maxLength = 4000;
  input.value = message.text;
  const save = el("button", "", "Save");
  save.type = "submit";
  const cancel = el("button", "secondary", "Cancel");
  cancel.type = "button";
  const label = el("label", "visually-hidden", "Edit message");
  label.htmlFor = input.id;
  const form = el("form", "edit-form", null, label, input, el("div", "row", null, save, cancel));
  const done = () => placeMessage(conv.messages.get(id) ?? message, true);
  cancel.addEventListener("click", done);
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.stopPropagation();
      done();
    } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    void submitting(form, async () => {
      const reply = await session.request({ type: "message.edit", id, text });
      applyEdit(reply.message, true);
      changeLogged(keyOfMessage(reply.message), reply.seq, true);
    });
  });
  li.querySelector(".text").replaceWith(form);
  li.querySelector(".message-actions")?.remove();
  input.focus();
}

function deleteMessage(id) {
  void acting(async () => {
    const reply = await session.request({ type: "message.delete", id });
    applyDelete(reply.with, reply.id);
    changeLogged(keyOfTarget(reply.with), reply.seq, true);
    $("message-input").focus();
  });
}

/** An edit (the reply to this device's own, or a push): the message's new state replaces it. */
function applyEdit(message, focus = false) {
  const key = keyOfMessage(message);
  const conv = state.conversations.get(key);
  if (!conv?.messages.has(message.id)) return;
  conv.messages.set(message.id, message);
  if (state.open === key) placeMessage(message, focus);
}

/**
 * An edit or a deletion of `key` arrived (pushed, replayed, or the reply to this device's own), at
 * `seq`: acknowledged like any event. It is not unread (PROTOCOL.md): when nothing was unread
 * before it, or it is the user's own, the readSeq kept here moves past it.
 */
function changeLogged(key, seq, own) {
  const conv = conversation(key);
  const nothingUnread = conv.readSeq >= conv.lastSeq;
  conv.lastSeq = Math.max(conv.lastSeq, seq);
  if (nothingUnread || own) conv.readSeq = Math.max(conv.readSeq, seq);
  queueAck(conv, seq);
  renderLists();
}

function applyDelete(withWhom, id) {
  const key = keyOfTarget(withWhom);
  const conv = state.conversations.get(key);
  const message = conv?.messages.get(id);
  if (!message) return;
  const deleted = { ...message, text: "", deleted: true };
  conv.messages.set(id, deleted);
  if (state.open === key) placeMessage(deleted);
}

function stateLabel(kind, text) {
  const label = el("span", "state", text);
  label.dataset.state = kind;
  return label;
}

function pendingItem(pending) {
  const time = el("time", "", formatTime(pending.at));
  time.dateTime = pending.at;
  const words = {
    sending: "sending…",
    waiting: "waiting for the connection…",
    failed: `not sent: ${pending.error}`,
  }[pending.state];
  const meta = el("div", "meta", null, el("span", "sender", "You"), time);
  meta.append(stateLabel(pending.state, words));
  if (pending.state === "failed") {
    const retry = el("button", "quiet retry", "Retry");
    retry.type = "button";
    retry.addEventListener("click", () => {
      const conv = conversation(pending.key);
      void trySend(conv, pending);
    });
    meta.append(retry);
  }
  const li = el("li", "message mine", null, meta, el("p", "text", pending.text));
  li.dataset.clientId = pending.clientId;
  return li;
}

function renderPending(pending) {
  if (state.open !== pending.key) return;
  const existing = $("messages").querySelector(`[data-client-id="${pending.clientId}"]`);
  const item = pendingItem(pending);
  if (existing) existing.replaceWith(item);
  else $("messages").append(item);
}

function send(text) {
  const key = state.open;
  const conv = conversation(key);
  const pending = {
    key,
    clientId: newClientId(),
    text,
    state: "waiting",
    error: null,
    at: new Date().toISOString(),
    inFlight: false,
  };
  conv.pending.set(pending.clientId, pending);
  renderPending(pending);
  scrollToEnd();
  void trySend(conv, pending);
}

/**
 * Sends (or sends again) an own message. The same `clientId` each time: after a reconnect the
 * server answers a retry with the message it already stored instead of storing a copy.
 */
async function trySend(conv, pending) {
  if (pending.inFlight || !conv.pending.has(pending.clientId)) return;
  if (session.state !== "online") {
    pending.state = "waiting";
    renderPending(pending);
    return;
  }
  pending.inFlight = true;
  pending.state = "sending";
  renderPending(pending);
  try {
    const reply = await session.request({
      type: "send",
      to: conv.target,
      text: pending.text,
      clientId: pending.clientId,
    });
    conv.pending.delete(pending.clientId);
    const message = reply.message;
    conv.messages.set(message.id, message);
    logged(conv, message);
    if (state.open === conv.key) {
      $("messages").querySelector(`[data-client-id="${pending.clientId}"]`)?.remove();
      placeMessage(message);
    }
    return;
  } catch (error) {
    if (error instanceof ServerError && error.code === "rate_limited") {
      pending.state = "waiting";
      setTimeout(() => void trySend(conv, pending), error.retryAfterMs ?? 1000);
    } else if (error instanceof ServerError) {
      pending.state = "failed";
      pending.error = error.message;
    } else {
      // The connection went away: the next welcome sends it again.
      pending.state = "waiting";
    }
  } finally {
    pending.inFlight = false;
  }
  renderPending(pending);
}

function nearEnd() {
  const box = $("messages-box");
  return box.scrollHeight - box.scrollTop - box.clientHeight < 48;
}

function scrollToEnd() {
  const box = $("messages-box");
  box.scrollTop = box.scrollHeight;
}

// ---- Acks ------------------------------------------------------------------------------------

/** Per conversation key: the highest seq this device has and has not yet acknowledged. */
const ackQueue = new Map();
let ackTimer;

/**
 * This device has `conv` up to `seq` (events of a conversation arrive in seq order). Acks are
 * batched per task, one cursor per conversation; those that could not go out wait for the next
 * welcome.
 */
function queueAck(conv, seq) {
  const had = ackQueue.get(conv.key);
  if (had === undefined || had.seq < seq) ackQueue.set(conv.key, { with: conv.target, seq });
  if (ackTimer === undefined) ackTimer = setTimeout(flushAcks, 0);
}

function flushAcks() {
  clearTimeout(ackTimer);
  ackTimer = undefined;
  for (const [key, cursor] of ackQueue) {
    if (!session.send({ type: "ack", ...cursor })) return;
    ackQueue.delete(key);
  }
}

// ---- Forms -----------------------------------------------------------------------------------

function setAuthBusy(busy) {
  $("login-button").disabled = busy;
  $("register-button").disabled = busy;
}

async function authenticate(event) {
  event.preventDefault();
  const action = event.submitter?.value ?? "login";
  const name = $("auth-name").value.trim();
  const password = $("auth-password").value;
  if (!NAME_RE.test(name)) {
    showError(`The name "${name}" does not fit: use 1 to 32 letters, digits, "_", "-" or "."`);
    $("auth-name").focus();
    return;
  }
  if (password.length < 8) {
    showError("The password is too short: use at least 8 characters");
    $("auth-password").focus();
    return;
  }
  hideError();
  setAuthBusy(true);
  try {
    if (action === "register") await session.register(name, password);
    await session.login(name, password);
    $("auth-password").value = "";
    if (action === "register") {
      notify(`Welcome, ${state.me.name}: your id is ${state.me.id}; give it to your friends`);
    }
  } catch (error) {
    showError(describe(error));
  } finally {
    setAuthBusy(false);
  }
}

/** An id, or the name of someone known here (a group co-member, someone who wrote). */
function resolveUser(text) {
  if (/^\d+$/.test(text)) return Number(text);
  const wanted = text.toLowerCase();
  for (const contact of state.contacts.values()) {
    if (contact.name.toLowerCase() === wanted) return contact.id;
  }
  for (const group of state.groups.values()) {
    for (const member of group.members.values()) {
      if (member.name.toLowerCase() === wanted) return member.id;
    }
  }
  return null;
}

/** Runs a form's request, showing its error in words; the form is busy meanwhile. */
async function submitting(form, work) {
  const buttons = form.querySelectorAll("button");
  buttons.forEach((b) => b.disabled = true);
  try {
    hideError();
    await work();
  } catch (error) {
    showError(describe(error));
  } finally {
    buttons.forEach((b) => b.disabled = false);
  }
}

function addFriend(event) {
  event.preventDefault();
  const input = $("friend-input");
  const text = input.value.trim();
  if (!text) return;
  const known = resolveUser(text);
  if (known === state.me.id) {
    showError("That is your own id: enter a friend's id");
    return;
  }
  void submitting(event.target, async () => {
    const id = known ?? await findExactly(text);
    if (id === null) return;
    await befriend(id);
    input.value = "";
  });
}

/** The id of the user named exactly `name` (in any case), or null after showing who was found. */
async function findExactly(name) {
  if (!NAME_RE.test(name)) {
    showError(`No one is called "${name}": names hold letters, digits, "_", "-" and "." only`);
    return null;
  }
  const reply = await session.request({ type: "user.search", query: name });
  const exact = reply.users.find((u) => u.name.toLowerCase() === name.toLowerCase());
  if (exact && exact.id !== state.me.id) return exact.id;
  state.found = { query: name, users: reply.users };
  renderFound();
  showError(
    exact
      ? "That is your own name: enter a friend's name"
      : `No one is called "${name}": choose from the people found, or check the name`,
  );
  return null;
}

async function befriend(id) {
  const reply = await session.request({ type: "friend.add", user: id });
  addContact(reply.friend, true);
  notify(`${reply.friend.name} is now your friend`);
}

function createGroup(event) {
  event.preventDefault();
  const name = $("group-name-input").value.trim();
  if (!name) return;
  const description = $("group-description-input").value.trim();
  void submitting(event.target, async () => {
    const reply = await session.request({ type: "group.create", name, description });
    joined(reply.group, `Group ${reply.group.name} created: its id is ${reply.group.id}`);
    $("group-name-input").value = "";
    $("group-description-input").value = "";
  });
}

function joinGroup(event) {
  event.preventDefault();
  const text = $("group-id-input").value.trim();
  if (!/^\d+$/.test(text)) {
    showError(`The group id "${text}" is not a number: ask a member for the group's id`);
    return;
  }
  void submitting(event.target, async () => {
    const reply = await session.request({ type: "group.join", group: Number(text) });
    joined(reply.group, `You joined ${reply.group.name}`);
    $("group-id-input").value = "";
  });
}

function joined(group, words) {
  state.groups.set(group.id, toGroup(group));
  renderLists();
  notify(words);
  openConversation(`group:${group.id}`);
}

function submitMessage(event) {
  event.preventDefault();
  const input = $("message-input");
  const text = input.value.trim();
  if (!text || !state.open) return;
  input.value = "";
  send(text);
  input.focus();
}

// ---- Wiring ----------------------------------------------------------------------------------

$("auth-form").addEventListener("submit", authenticate);
$("add-friend-form").addEventListener("submit", addFriend);
$("find-form").addEventListener("submit", findPeople);
$("message-input").addEventListener("input", sendTyping);
$("create-group-form").addEventListener("submit", createGroup);
$("join-group-form").addEventListener("submit", joinGroup);
$("send-form").addEventListener("submit", submitMessage);
$("message-input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("send-form").requestSubmit();
  }
});
$("messages-box").addEventListener("scroll", () => {
  if (state.open && $("messages-box").scrollTop < 48) void loadOlder(conversation(state.open));
});
$("older").addEventListener("click", () => {
  if (state.open) void loadOlder(conversation(state.open));
});
$("back").addEventListener("click", closeConversation);
$("befriend").addEventListener("click", () => {
  const { user } = targetOf(state.open);
  void submitting($("befriend").parentElement, () => befriend(user));
});
$("logout").addEventListener("click", () => void session.logout());
$("alert-close").addEventListener("click", () => {
  const action = alertAction;
  hideError();
  action?.run();
});
$("resume-cancel").addEventListener("click", () => {
  session.cancel();
  $("auth-name").focus();
});
document.addEventListener("visibilitychange", () => {
  if (state.open) {
    const conv = conversation(state.open);
    markRead(conv);
    renderLists();
  }
});
addEventListener("online", () => session.retryNow());
document.addEventListener("keydown", (event) => {
  if (
    event.key === "Escape" && state.open && $("chat-view").classList.contains("in-conversation")
  ) {
    if (getComputedStyle($("back")).display !== "none") closeConversation();
  }
});

if (session.resume()) showResuming();
else showAuth();
