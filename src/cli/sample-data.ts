/**
 * Sample data the project writes itself (for the demo and the default fixtures): an eval set for
 * a shop's support agent over six topics, and production traffic over those six plus two topics
 * the eval set never tested. Deterministic for a seed.
 */
import { rng } from '../coverage/vec.js';
import type { RequestLogInput } from '../schema/request.js';

interface Topic {
  name: string;
  templates: string[];
  slots: Record<string, string[]>;
  /** chance that a production request on this topic gets escalated to a human */
  escalation: number;
}

const ITEMS = ['order', 'package', 'parcel', 'delivery', 'shipment'];
const PRODUCTS = ['headphones', 'running shoes', 'coffee grinder', 'winter jacket', 'phone case', 'desk lamp', 'backpack'];

export const TOPICS: Topic[] = [
  {
    name: 'shipping',
    escalation: 0.05,
    slots: { item: ITEMS, days: ['two days', 'a week', 'ten days', 'three weeks'] },
    templates: [
      'where is my {item}?',
      'my {item} has not arrived after {days}',
      'how can I track my {item}',
      'the tracking number for my {item} does not work',
      'when will my {item} be delivered',
      'can I change the delivery address of my {item}',
      'my {item} says delivered but I never got it',
      'how long does shipping take to Canada',
    ],
  },
  {
    name: 'returns',
    escalation: 0.08,
    slots: { product: PRODUCTS, reason: ['too small', 'broken', 'not what I ordered', 'the wrong colour'] },
    templates: [
      'how do I return the {product}',
      'the {product} I received is {reason}, can I send it back',
      'I want a refund for my {product}',
      'when will I get my money back for the returned {product}',
      'do I have to pay for return shipping on the {product}',
      'can I exchange the {product} for a different size',
      'how long is the return window for {product}',
    ],
  },
  {
    name: 'account',
    escalation: 0.04,
    slots: { thing: ['password', 'email address', 'phone number', 'username'] },
    templates: [
      'I forgot my {thing}',
      'how do I change my {thing}',
      'I cannot log in to my account',
      'my account is locked after too many attempts',
      'I did not receive the verification code',
      'how do I update the {thing} on my profile',
      'two factor authentication is not working',
    ],
  },
  {
    name: 'payments',
    escalation: 0.1,
    slots: { method: ['credit card', 'PayPal', 'debit card', 'Apple Pay'], amount: ['twice', 'the wrong amount', 'after I cancelled'] },
    templates: [
      'my {method} was charged {amount}',
      'why was my {method} declined',
      'can I pay with {method}',
      'I see a charge I do not recognise on my {method}',
      'how do I update the {method} on file',
      'the payment failed but money left my account',
    ],
  },
  {
    name: 'product',
    escalation: 0.02,
    slots: { product: PRODUCTS, q: ['waterproof', 'in stock', 'available in blue', 'covered by warranty'] },
    templates: [
      'is the {product} {q}?',
      'what size should I order for the {product}',
      'when will the {product} be back in stock',
      'does the {product} come with a warranty',
      'what is the difference between the two {product} models',
      'how do I clean the {product}',
    ],
  },
  {
    name: 'discounts',
    escalation: 0.03,
    slots: { code: ['promo code', 'discount code', 'coupon', 'voucher'] },
    templates: [
      'my {code} is not working',
      'can I use two {code}s on one order',
      'I forgot to apply my {code} at checkout',
      'do you have a student {code}',
      'why was my {code} rejected',
      'is there a sale coming up',
    ],
  },
  // topics the eval set never covers: production surprises
  {
    name: 'data-privacy',
    escalation: 0.35,
    slots: { data: ['personal data', 'purchase history', 'address and phone number', 'account data'] },
    templates: [
      'please delete all my {data} under GDPR',
      'how do I download a copy of my {data}',
      'who do you share my {data} with',
      'I want to opt out of you selling my {data}',
      'can you tell me what {data} you store about me',
    ],
  },
  {
    name: 'gift-cards',
    escalation: 0.3,
    slots: { card: ['gift card', 'e-gift card', 'store credit card'], amount: ['50 dollar', '100 dollar', '25 euro'] },
    templates: [
      'my {amount} {card} balance shows zero',
      'how do I redeem a {card}',
      'can I buy a {card} for a friend abroad',
      'the {card} code is invalid',
      'does my {card} expire',
    ],
  },
];

export const EVAL_TOPICS = TOPICS.slice(0, 6).map((t) => t.name);
export const SURPRISE_TOPICS = TOPICS.slice(6).map((t) => t.name);

const OPENERS = ['', '', '', 'hi, ', 'hello, ', 'quick question: ', 'please help, '];

function render(t: Topic, r: () => number): string {
  const tpl = t.templates[Math.floor(r() * t.templates.length)];
  const text = tpl.replace(/\{(\w+)\}/g, (_, k: string) => {
    const opts = t.slots[k];
    return opts[Math.floor(r() * opts.length)];
  });
  return OPENERS[Math.floor(r() * OPENERS.length)] + text;
}

export interface EvalCaseRow {
  id: string;
  query: string;
  tags: string[];
}

/** Eval set: `perTopic` cases for each of the six eval topics. */
export function sampleEvalSet(perTopic = 30, seed = 7): EvalCaseRow[] {
  const r = rng(seed);
  const out: EvalCaseRow[] = [];
  for (const t of TOPICS.slice(0, 6)) {
    for (let i = 0; i < perTopic; i++) out.push({ id: `${t.name}-${i}`, query: render(t, r), tags: [t.name] });
  }
  return out;
}

/**
 * Production traffic: `n` request logs from `start` on, one per `stepMs`. A `surpriseShare` of them
 * are on the two topics the eval set never covered.
 */
export function sampleTraffic(
  n: number,
  opts: { seed?: number; start?: number; stepMs?: number; surpriseShare?: number; idPrefix?: string } = {},
): (RequestLogInput & { topic_hint: string })[] {
  const r = rng(opts.seed ?? 11);
  const start = opts.start ?? Date.now() - n * (opts.stepMs ?? 1000);
  const agents = ['support-bot', 'checkout-assistant'];
  const out: (RequestLogInput & { topic_hint: string })[] = [];
  for (let i = 0; i < n; i++) {
    const surprise = r() < (opts.surpriseShare ?? 0.2);
    const pool = surprise ? TOPICS.slice(6) : TOPICS.slice(0, 6);
    const t = pool[Math.floor(r() * pool.length)];
    const escalated = r() < t.escalation;
    out.push({
      request_id: `${opts.idPrefix ?? 'req'}-${i}`,
      ts: new Date(start + i * (opts.stepMs ?? 1000)).toISOString(),
      query: render(t, r),
      agent: agents[Math.floor(r() * agents.length)],
      session_id: `s-${Math.floor(i / 3)}`,
      turn: (i % 3) + 1,
      escalated,
      outcome: escalated ? 'escalated' : r() < 0.03 ? 'failed' : 'ok',
      latency_ms: Math.round(300 + r() * 2500),
      cost_usd: Math.round(r() * 2000) / 1e5,
      tools: r() < 0.5 ? ['order_lookup'] : [],
      topic_hint: t.name,
    });
  }
  return out;
}
