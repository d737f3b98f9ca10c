// The site's client code, built by serve.build into public/dist/client.js. PartyKit
// defines PARTYKIT_HOST for it: the server the page should connect to.
declare const PARTYKIT_HOST: string;

export const host: string = PARTYKIT_HOST;
console.log(`the site's client, for ${host}`);
