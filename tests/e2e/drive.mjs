// Drives Microsoft's local Teams client (the Agents Playground) against `chatwarden dev`:
// an admin asks for a removal in a team channel; each viewer's own card (refresh) shows the
// buttons to an admin and the status to a member who may not decide; an approval without a
// reason changes nothing, one with a reason runs, and the stand-in Graph must have received
// exactly one removeAllAccessForUser for that user and chat; the reason is on the result card and
// in /status. Then a Graph change notification of the outsider back in that chat must bring a
// new approval card.
// Usage: BOT=http://127.0.0.1:PORT PG=http://127.0.0.1:PORT node drive.mjs
import WebSocket from 'ws';

const BOT = process.env.BOT;
const PG = process.env.PG;
const SEED_CHAT = '19:5b1f0c2a-7d9e-4c3b-8a6f-0e1d2c3b4a59_00000000-0000-0000-0000-0000000000020@unq.gbl.spaces';
const SEED_USER_OID = '00000000-0000-0000-0000-0000000000020';
let passed = 0;
let failed = 0;

function check(name, ok, detail = '') {
  if (ok) { passed += 1; console.log(`ok   ${name}`); } else { failed += 1; console.log(`FAIL ${name} ${detail}`); }
}

async function call(method, url, body) {
  const response = await fetch(url, { method, headers: { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = text; }
  if (!response.ok) throw new Error(`${method} ${url} -> ${response.status} ${text}`);
  return json;
}

const frames = [];
function nextFrame(predicate, ms = 20000) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const poll = () => {
      const index = frames.findIndex(predicate);
      if (index >= 0) return resolve(frames.splice(index, 1)[0]);
      if (Date.now() - started > ms) return reject(new Error('timed out waiting for the bot'));
      setTimeout(poll, 50);
    };
    poll();
  });
}

async function say(channel, bot, me, text, thread) {
  const conversation = thread || channel;
  return call('POST', `${PG}/_conversation/v1/conversations/${encodeURIComponent(conversation)}/messages`, {
    from: { id: me }, text: `<at>${bot.name}</at> ${text}`, textFormat: 'plain',
    mentions: [{ mentioned: { id: bot.id }, text: `<at>${bot.name}</at>` }],
  });
}

const { config } = await call('GET', `${PG}/_internal/v1/config`);
const me = config.currentUser.id;
const bot = config.bot;
const channel = config.teams[0].channels[0].id;
const ws = new WebSocket(`${PG.replace(/^http/, 'ws')}/_ws_conversation/v1/conversations/stream`);
await new Promise((resolve, reject) => { ws.on('open', resolve); ws.on('error', reject); });
ws.on('message', (data) => frames.push(JSON.parse(data.toString())));

// 1. /help is answered in the thread.
const help = await say(channel, bot, me, '/help');
const helpReply = await nextFrame((f) => f.action === 'createMessage' && f.actionConversationId === help.postConversationId);
check('/help is answered', /remove-chat/.test(helpReply.message.text || ''), JSON.stringify(helpReply));

// 2. /remove-chat posts an approval card that found the seeded audit evidence.
const ask = await say(channel, bot, me, `/remove-chat ${SEED_CHAT} alexw@example.com phishing link`);
const thread = ask.postConversationId;
const cardFrame = await nextFrame((f) => f.action === 'createMessage' && f.actionConversationId === thread);
const card = (cardFrame.message.attachments || []).find((a) => a.contentType === 'application/vnd.microsoft.card.adaptive');
check('an approval card is posted', !!card, JSON.stringify(cardFrame));
const approve = card.content.actions.find((a) => a.type === 'Action.Execute' && a.verb === 'approve');
check('the card has an Approve button with the case id', !!approve && /^CW-/.test(approve.data.caseId));
check('the card shows the audit evidence', JSON.stringify(card.content).includes('audit record 5d7c3b1e-0a4f-4e61-9b2d-7f8e9a0b1c2d'));

// Universal Actions invokes as the local client sends them, from `user` (a user id of its config).
function execute(user, verb, data, trigger = 'manual') {
  return call('POST', `${PG}/_conversation/v1/invoke`, {
    name: 'adaptiveCard/action', from: { id: user }, conversation: { id: thread }, replyToId: cardFrame.message.messageId,
    value: { action: { type: 'Action.Execute', verb, data }, trigger },
  });
}
const caseId = approve.data.caseId;
const visible = (answer) => JSON.stringify((answer && answer.value) || answer);

// 2a. Each viewer's own card (the `refresh` invoke Teams sends when the card is shown): an admin
// gets the reason field and the buttons; a channel member who is not an admin, status only.
const adele = config.users.find((u) => u.name === 'Adele Vance').id;
const adminView = await execute(me, 'refresh', { chatwarden: 1, caseId, action: 'refresh' }, 'automatic');
check('an approver refreshing the card sees Approve and the reason field',
  /"verb":"approve"/.test(visible(adminView)) && /"type":"Input.Text"/.test(visible(adminView)), visible(adminView));
const memberView = await execute(adele, 'refresh', { chatwarden: 1, caseId, action: 'refresh' }, 'automatic');
check('a member who may not decide sees the status only',
  /Waiting for approval/.test(visible(memberView)) && !/"verb":"approve"/.test(visible(memberView)), visible(memberView));

// 2b. Approve without a reason: the card comes back with the field marked, nothing is decided.
const noReason = await execute(me, approve.verb, approve.data);
check('an approval without a reason brings the card back with the field marked',
  /Nothing was decided/.test(visible(noReason)) && /"verb":"approve"/.test(visible(noReason)), visible(noReason));
const early = (await call('GET', `${BOT}/_local/graph/calls`)).filter((c) => c.path.endsWith('/removeAllAccessForUser'));
check('and Graph is not called', early.length === 0, JSON.stringify(early));

// 3. Pressing Approve with a reason runs the removal through the stand-in Graph.
const REASON = 'lure confirmed in the audit record';
const answer = await execute(me, approve.verb, { ...approve.data, reason: REASON });
check('the invoke answers with the updated card', answer.type === 'application/vnd.microsoft.card.adaptive', JSON.stringify(answer));
let removals = [];
for (let i = 0; i < 100 && removals.length === 0; i += 1) {
  const calls = await call('GET', `${BOT}/_local/graph/calls`);
  removals = calls.filter((c) => c.path.endsWith('/removeAllAccessForUser'));
  if (removals.length === 0) await new Promise((r) => setTimeout(r, 100));
}
check('exactly one removeAllAccessForUser reached Graph', removals.length === 1, JSON.stringify(removals));
const removal = removals[0] || { body: {} };
check('for the chat that was asked', removal.path === `/v1.0/chats/${SEED_CHAT}/removeAllAccessForUser`, removal.path);
check('for the user found in the audit evidence', removal.body.user && removal.body.user.id === SEED_USER_OID, JSON.stringify(removal.body));
check('Graph answered 204', removal.status === 204);
const done = await nextFrame((f) => f.action === 'updateMessage' && JSON.stringify(f.message.attachments || []).includes('Done: Remove user from chat'));
check('the card is updated for everyone with the outcome', !!done);
check('the result card shows the reason', JSON.stringify(done.message.attachments).includes(REASON), JSON.stringify(done.message.attachments));
const status = await say(channel, bot, me, `/status ${caseId}`);
const statusReply = await nextFrame((f) => f.action === 'createMessage' && f.actionConversationId === status.postConversationId);
check('/status shows the decision with its reason', JSON.stringify(statusReply.message).includes(REASON), JSON.stringify(statusReply.message));

// 4. A second press changes nothing.
await execute(me, approve.verb, { ...approve.data, reason: REASON });
await new Promise((r) => setTimeout(r, 500));
const after = (await call('GET', `${BOT}/_local/graph/calls`)).filter((c) => c.path.endsWith('/removeAllAccessForUser'));
check('a second press calls Graph no more', after.length === 1, JSON.stringify(after));

// 5. Graph's change notification (played by local mode: encrypted, signed, through
// /api/notifications) of the outsider back in the same chat: the removed pair alerts again, as a
// new approval card in the channel that names its source.
const delivered = await call('POST', `${BOT}/_local/notifications/member-added`);
check('the notification is accepted', delivered.status === 202 && delivered.answer.queued === 1, JSON.stringify(delivered));
const alert = await nextFrame((f) => f.action === 'createMessage' && JSON.stringify(f.message.attachments || []).includes('Graph change notification at'));
check('a new approval card names the change notification', !!alert && JSON.stringify(alert.message.attachments).includes('Approve'), JSON.stringify(alert));

ws.close();
console.log(`e2e: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
