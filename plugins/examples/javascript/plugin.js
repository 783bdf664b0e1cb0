// word-count: a Sluice guardrail in JavaScript (componentize-js).
//
// Fails a request (or response) whose text has fewer than `min` or more than
// `max` words in all. Configuration: {"min": 0, "max": 500}.

import { log } from 'sluice:plugin/host@0.1.0';

function parse(config) {
  let value;
  try {
    value = JSON.parse(config || '{}');
  } catch (e) {
    throw { tag: 'invalid-config', val: `not JSON: ${e.message}` };
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw { tag: 'invalid-config', val: 'expected an object' };
  }
  const min = value.min ?? 0;
  const max = value.max ?? Number.MAX_SAFE_INTEGER;
  if (!Number.isInteger(min) || !Number.isInteger(max) || min < 0 || max < min) {
    throw { tag: 'invalid-config', val: '`min` and `max` must be integers with 0 <= min <= max' };
  }
  return { min, max };
}

export const meta = {
  describe() {
    return {
      name: 'word-count',
      version: '0.1.0',
      kind: 'guardrail',
      description: 'Fails text with too few or too many words (JavaScript)',
      configSchema: '{"type":"object","properties":{"min":{"type":"integer","minimum":0},"max":{"type":"integer","minimum":0}}}',
      wantsBody: false,
    };
  },
  validateConfig(config) {
    parse(config);
  },
};

export const checks = {
  check(config, input) {
    const { min, max } = parse(config);
    const words = input.segments
      .map((s) => s.text.split(/\s+/).filter((w) => w.length > 0).length)
      .reduce((a, b) => a + b, 0);
    if (words < min || words > max) {
      log('info', `word-count: ${words} words, allowed ${min} to ${max}`);
      return {
        outcome: { tag: 'fail', val: { reason: `the text has ${words} words; allowed ${min} to ${max}`, deny: false } },
        score: undefined,
        data: JSON.stringify({ words }),
      };
    }
    return { outcome: { tag: 'pass' }, score: undefined, data: JSON.stringify({ words }) };
  },
};
