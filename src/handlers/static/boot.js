// A classic script: it runs where the page's ES modules cannot, i.e. opened from disk
// (browsers refuse module scripts from file://), and says how to serve the page instead.
'use strict';

if (location.protocol === 'file:') {
  document.addEventListener('DOMContentLoaded', () => {
    const note = document.getElementById('file-note');
    if (note) note.hidden = false;
    for (const id of ['prompt', 'send']) {
      const control = document.getElementById(id);
      if (control) control.disabled = true;
    }
  });
}
