#!/usr/bin/env node
// Writes the tokenizer test corpus: one JSON object per line, {"text": "..."} or, for random
// bytes, {"raw": base64 of the bytes, "text": the bytes decoded with U+FFFD replacement}.
// Deterministic (fixed seed, no clock, no locale): the same file on every machine.
// usage: node make_corpus.js OUT.jsonl [MIN_BYTES]
"use strict";
const fs = require("fs");

function rng(seed) {
  // mulberry32
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: (arr) => arr[Math.floor(next() * arr.length)],
  };
}
const R = rng(20240611);
const chars = (s) => Array.from(s);
const repeat = (n, f) => Array.from({ length: n }, f).join("");

const englishWords = (
  "the of and to in is was that for it with as his on be at by had are but from or have an they " +
  "which one you were her all she there would their we him been has when who will more no if out " +
  "so said what up its about into than them can only other new some could time these two may then " +
  "do first any my now such like our over man me even most made after also did many before must " +
  "through back years where much your way well down should because each just those people Mr how " +
  "too little state good very make world still own see men work long get here between both life " +
  "being under never day same another know while last might us great old year off come since " +
  "against go came right used take three picture detail describe tokenizer GPU inference OpenAI " +
  "naïve café résumé coöperate façade Zürich São Paulo déjà vu"
).split(" ");
const contractions = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'LL",
  "'D", "'M", "\u2019s", "'\u017f", "'x", "''", "'", "n't"];
const punct = [".", ",", "!", "?", ";", ":", " - ", " -- ", "...", "\u2026", " (", ")", "\"", "'",
  " [", "]", " {", "}", "/", "@", "#", "$", "%", "&", "*", "+", "=", "<", ">", "|", "~", "`", "^"];

function english() {
  let s = "";
  const n = R.int(3, 60);
  for (let i = 0; i < n; i++) {
    let w = R.pick(englishWords);
    const r = R.next();
    if (r < 0.08) w = w.toUpperCase();
    else if (r < 0.2) w = w[0].toUpperCase() + w.slice(1);
    if (R.next() < 0.1) w += R.pick(contractions);
    s += (i ? " " : "") + w;
    if (R.next() < 0.15) s += R.pick(punct);
    if (R.next() < 0.04) s += R.pick(["\n", "\n\n", "\r\n", "  ", "\t"]);
    if (R.next() < 0.03) s += " " + R.int(0, 100000);
  }
  if (R.next() < 0.2) s += " https://example.com/path?q=" + R.int(0, 1e6) + "&x=y#frag";
  return s + R.pick([".", "!", "?", "", "\n"]);
}

const hanzi = chars(
  "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说" +
  "产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使" +
  "点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明" +
  "看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料" +
  "象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指" +
  "几九区强放决西被干做必战先回则任取据处队南给色光门即保治北造百规热领七海口东导器压志世金增争济阶" +
  "油思术极交受联什认六共权收证改清己美再采转更单风切打白教速花带安场身车例真务具万每目至达走积示议" +
  "声报斗完类八离华名确才科张信马节话米整空元况今集温传土许步群广石记需段研界拉林律叫且究观越织装影" +
  "算低持音众书布复容儿须际商非验连断深难近矿千周委素技备半办青省列习响约支般史感劳便团往酸历市克何" +
  "除消构府称太准精值号率族维划选标写存候毛亲快效斯院查江型眼王按格养易置派层片始却专状育厂京识适属" +
  "圆包火住调满县局照参红细引听该铁价严龙飞鑫龘𠀀𪚥");
const cjkPunct = chars("，。！？、：；“”‘’（）《》【】—…·");

function chinese() {
  let s = "";
  const n = R.int(5, 200);
  for (let i = 0; i < n; i++) {
    s += R.pick(hanzi);
    if (R.next() < 0.1) s += R.pick(cjkPunct);
    if (R.next() < 0.02) s += " " + R.pick(englishWords) + " ";
    if (R.next() < 0.02) s += String(R.int(0, 3000));
  }
  return s;
}

const hiragana = chars("あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをんがぎぐげござじずぜぞだでどばびぶべぼぱぴぷぺぽゃゅょっ");
const katakana = chars("アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワヲンガギグゲゴザジズゼゾダヂヅデドバビブベボパピプペポャュョッー");
const kanji = chars("日本語東京大学先生学生時間今日明日昨年漢字読書食事電車会社仕事天気雨雪花桜山川");

function japanese() {
  let s = "";
  const n = R.int(5, 150);
  for (let i = 0; i < n; i++) {
    const r = R.next();
    s += r < 0.45 ? R.pick(hiragana) : r < 0.75 ? R.pick(katakana) : R.pick(kanji);
    if (R.next() < 0.08) s += R.pick(chars("、。「」『』！？・〜"));
    if (R.next() < 0.01) s += "\u3000";
  }
  return s;
}

const cyrillic = chars("абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ");
const russianWords = ("и в не на я быть он с что а по это она этот к но они мы как из у который то за " +
  "свой весь год от так о для ты же все тот мочь вы человек такой его сказать только или ещё бы себя " +
  "один как уже до время если сам когда другой вот говорить наш мой знать стать при чтобы дело жизнь " +
  "Москва Россия Пушкин изображение подробно").split(" ");

function russian() {
  let s = "";
  const n = R.int(3, 60);
  for (let i = 0; i < n; i++) {
    let w = R.next() < 0.8 ? R.pick(russianWords) : repeat(R.int(1, 12), () => R.pick(cyrillic));
    if (R.next() < 0.1) w = w.toUpperCase();
    s += (i ? " " : "") + w;
    if (R.next() < 0.12) s += R.pick([",", ".", "!", "?", " —", ":", "«", "»"]);
  }
  return s;
}

const codeSnippets = [
  "int main(int argc, char **argv)\n{\n    for (int i = 0; i < argc; i++) {\n        printf(\"%s\\n\", argv[i]);\n    }\n    return 0;\n}\n",
  "def tokenize(text: str) -> list[int]:\n    \"\"\"Return ids.\"\"\"\n    ids = []\n    for piece in re.findall(PAT, text):\n        ids.extend(bpe(piece))\n    return ids\n",
  "const x = await fetch(`/api/v1/items?id=${id}`);\nif (!x.ok) { throw new Error('bad: ' + x.status); }\n",
  "fn merge(parts: &mut Vec<(usize, u32)>) -> Option<u32> {\n\tlet mut min = u32::MAX;\n\tfor &(_, r) in parts.iter() { min = min.min(r); }\n\tSome(min)\n}\n",
  "#!/bin/bash\nset -euo pipefail\nfor f in *.txt; do\n  wc -l \"$f\" | awk '{print $1}' >> out.log 2>&1\ndone\n",
  "{\n  \"name\": \"glm4v\",\n  \"version\": \"1.0.0\",\n  \"deps\": [1, 2.5, -3e10, null, true]\n}\n",
  "<html>\r\n<body class=\"main\">\r\n\t<p>Hello &amp; welcome!</p>\r\n</body>\r\n</html>\r\n",
  "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%son' ORDER BY id DESC LIMIT 10;\n",
  "x = [i ** 2 for i in range(10) if i % 3 == 0]  # squares\n\n\n\nprint(x[::-1])\n",
  "    if (a && b || !c) { a <<= 2; b >>= 3; c ^= 0xFF; }\n        else { return -1; }\n",
];

function code() {
  let s = "";
  const n = R.int(1, 4);
  for (let i = 0; i < n; i++) {
    let snippet = R.pick(codeSnippets);
    if (R.next() < 0.3) snippet = snippet.replace(/    /g, "\t");
    if (R.next() < 0.2) snippet = snippet.replace(/\n/g, "\r\n");
    s += snippet;
    if (R.next() < 0.3) s += repeat(R.int(1, 6), () => "\n");
  }
  return s;
}

const emojis = ["😀", "😂", "🤖", "🎉", "❤️", "👍", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇯🇵", "🇺🇸", "1️⃣", "🧑‍💻",
  "🐍", "🦀", "🌍", "✨", "🔥", "💯", "©️", "™", "☃", "🫠", "🥲", "🀄", "🃏", "🪐"];

function emoji() {
  let s = "";
  const n = R.int(1, 40);
  for (let i = 0; i < n; i++) {
    s += R.pick(emojis);
    if (R.next() < 0.3) s += " ";
    if (R.next() < 0.2) s += R.pick(englishWords);
    if (R.next() < 0.1) s += R.pick(hanzi);
  }
  return s;
}

// White_Space characters, near misses (U+180E, U+200B, U+001C: not White_Space), and friends.
const spaces = [" ", " ", " ", "\t", "\n", "\r\n", "\r", "\u000b", "\u000c", "\u0085", "\u00a0",
  "\u1680", "\u2000", "\u2007", "\u200a", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000",
  "\u180e", "\u200b", "\u001c", "\u001f", "\ufeff"];

function whitespace() {
  let s = "";
  const n = R.int(1, 30);
  for (let i = 0; i < n; i++) {
    const k = R.next() < 0.1 ? R.int(50, 3000) : R.int(1, 12);
    const mode = R.int(0, 3);
    if (mode === 0) s += " ".repeat(k);
    else if (mode === 1) s += R.pick(spaces).repeat(k);
    else s += repeat(k, () => R.pick(spaces));
    if (R.next() < 0.8) s += R.pick([R.pick(englishWords), R.pick(hanzi), "!", "1", "'s", ""]);
  }
  return s;
}

const numerals = chars("0123456789０１２３４５６７８９٠١٢٣٤٥٦٧٨٩०१२३४५६७८९²³¹½¾ⅫⅣ①⑳");

function digits() {
  let s = "";
  const n = R.int(1, 30);
  for (let i = 0; i < n; i++) {
    const r = R.next();
    if (r < 0.5) s += repeat(R.int(1, 40), () => R.int(0, 9));
    else if (r < 0.7) s += repeat(R.int(1, 10), () => R.pick(numerals));
    else if (r < 0.8) s += R.int(0, 9).toString().repeat(R.int(100, 2000));
    else s += (R.next() * 1e6).toFixed(R.int(0, 6)) + R.pick(["%", "e-5", "px", " km", "元"]);
    s += R.pick([" ", ",", ".", "-", "", "\n", ":"]);
  }
  return s;
}

const scripts = [
  chars("αβγδεζηθικλμνξοπρστυφχψωΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩ"),
  chars("ابتثجحخدذرزسشصضطظعغفقكلمنهوي"),
  chars("אבגדהוזחטיכלמנסעפצקרשת"),
  chars("कखगघचछजझटठडढणतथदधनपफबभमयरलवशसह्ािीुूेैोौं"),
  chars("กขคงจฉชซญดตถทธนบปผพฟภมยรลวศษสหอฮะัาำิีึืุู่้"),
  chars("가나다라마바사아자차카타파하한국어글안녕하세요"),
  chars("àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿœßĳﬁ"),
  chars("e\u0301a\u0300o\u0308n\u0303\u0327\u200d\u200c"),
];

function mixed() {
  let s = "";
  const n = R.int(5, 80);
  for (let i = 0; i < n; i++) {
    const r = R.next();
    if (r < 0.5) s += repeat(R.int(1, 8), () => R.pick(R.pick(scripts)));
    else if (r < 0.6) s += R.pick(hanzi) + R.pick(hiragana);
    else if (r < 0.7) s += R.pick(emojis);
    else if (r < 0.8) s += R.pick(englishWords) + R.pick(contractions);
    else s += R.pick(punct);
    if (R.next() < 0.5) s += R.pick([" ", "", "\n", "  "]);
  }
  return s;
}

// Long single pieces: the merge must stay fast however long a word, number or run gets.
function longPiece() {
  const k = R.int(500, 6000);
  const r = R.int(0, 5);
  if (r === 0) return "a".repeat(k);
  if (r === 1) return repeat(k, () => String.fromCharCode(97 + R.int(0, 25)));
  if (r === 2) return " ".repeat(k) + "x";
  if (r === 3) return "!".repeat(k);
  if (r === 4) return R.pick(hanzi).repeat(Math.floor(k / 3));
  return "\n".repeat(k);
}

function randomBytes() {
  const n = R.int(1, 400);
  const bytes = Buffer.alloc(n);
  const ascii = R.next() < 0.5;
  for (let i = 0; i < n; i++) bytes[i] = ascii && R.next() < 0.7 ? R.int(32, 126) : R.int(0, 255);
  // Node decodes like Python's errors="replace": one U+FFFD per maximal invalid subsequence.
  return { raw: bytes.toString("base64"), text: bytes.toString("utf8") };
}

const kinds = [english, english, chinese, japanese, russian, code, emoji, whitespace, digits,
  mixed, longPiece, randomBytes];

function main() {
  const out = process.argv[2];
  const minBytes = Number(process.argv[3] || 1200000);
  if (!out) {
    console.error("usage: node make_corpus.js OUT.jsonl [MIN_BYTES]");
    process.exit(2);
  }
  const fixed = ["", " ", "\n", "Describe the picture in detail.", "这是一张图片。",
    "hello <|endoftext|> <|user|> [gMASK]<sop>", "I'm they're we'll 'S 'ſ x's", "\ud83d\ude00"];
  const lines = fixed.map((text) => JSON.stringify({ text }));
  let total = 0;
  while (total < minBytes) {
    const r = R.pick(kinds)();
    const rec = typeof r === "string" ? { text: r } : r;
    total += Buffer.byteLength(rec.text, "utf8");
    lines.push(JSON.stringify(rec));
  }
  fs.writeFileSync(out, lines.join("\n") + "\n");
}

main();
