/** jstat ships no types; calibrate.ts narrows the two functions it uses. */
declare module 'jstat';
